"""Pure logic of issue 11: flow-parameter checks, fixed user messages, the CLI's error lines and the
background status writer (no servers, no ffmpeg)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.waiting import wait_for
from vibeinsight.errors import MESSAGES, InputRejected, user_message
from vibeinsight.params import canonical_uuid, check_ids, check_s3_source, row_ids, workspace_for
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.status_rule import next_seq, update_for_state
from vibeinsight.throttle import CoalescingWriter

pytestmark = pytest.mark.unit

USER = "0e7f1a9e-3d53-4f3c-8d2f-3f0f6c9e2b11"
OTHER = "5b0f3c52-3f7e-4c43-9a43-1d2c8c7f0a01"


def _code(fn, *args) -> str:
    with pytest.raises(InputRejected) as info:
        fn(*args)
    return info.value.code


def test_ids_must_be_uuids_and_are_lower_cased():
    assert canonical_uuid(USER.upper()) == USER
    assert canonical_uuid("../x") is None and canonical_uuid(None) is None and canonical_uuid(7) is None
    check_ids(USER, None)
    for bad in ("../x", "/etc", "", "x" * 40, USER + "/.."):
        assert _code(check_ids, bad, None) == "invalid_parameter"
        assert _code(check_ids, None, bad) == "invalid_parameter"
    assert row_ids({"session_id": "../x", "user_id": "bob"}, "RUN-ID") == ("run-id", None)
    assert row_ids({"session_id": USER.upper(), "user_id": OTHER}, "r") == (USER, OTHER)


def test_workspace_stays_under_the_work_folder(tmp_path):
    assert workspace_for(tmp_path / "work", USER) == (tmp_path / "work" / USER).resolve()
    for bad in ("../x", "/etc", ".", "a/b", "..", str(tmp_path)):
        assert _code(workspace_for, tmp_path / "work", bad) == "invalid_parameter"


def test_workspace_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "work" / USER).symlink_to(tmp_path / "elsewhere")
    assert _code(workspace_for, tmp_path / "work", USER) == "invalid_parameter"


@pytest.mark.parametrize("source", [
    f"s3://bucket/uploads/{USER}/call.m4a", f"uploads/{USER}/a/b.wav",
])
def test_a_user_may_read_their_own_uploads(source):
    check_s3_source(source, "bucket", ["uploads/"], USER)


@pytest.mark.parametrize("source", [
    f"s3://other-bucket/uploads/{USER}/call.m4a",  # another bucket
    f"s3://bucket/uploads/{OTHER}/call.m4a",  # another user's upload
    f"s3://bucket/results/{USER}.json",  # not an upload
    f"s3://bucket/uploads/{USER}/../{OTHER}/call.m4a",  # climbing out
    f"s3://bucket/uploads/{USER}",  # the folder itself
    "https://example.com/a.wav", "file:///etc/passwd", "/etc/passwd",
])
def test_anything_else_in_object_storage_is_refused(source):
    assert _code(check_s3_source, source, "bucket", ["uploads/"], USER) == "source_not_allowed"


def test_object_storage_needs_a_user():
    assert _code(check_s3_source, f"s3://bucket/uploads/{USER}/a.wav", "bucket", ["uploads/"], None) == \
        "source_not_allowed"


def test_users_read_one_fixed_sentence_per_code():
    assert user_message("not_audio") == MESSAGES["not_audio"][0]
    assert user_message("not_audio", "ja") == MESSAGES["not_audio"][1]
    assert user_message("something_new") == user_message("internal")  # the generic sentence
    u = update_for_state("FAILED", session_id=USER, flow_run_id="r", user_id=None, seq=1, language="ja",
                         message="ffmpeg: [hls @ 0x1] Format not on whitelist", error=InputRejected(
                             "https://api.openai.com/v1/audio answered 401: invalid key sk-…", "api_auth"))
    assert u.error_code == "api_auth" and u.error_message == user_message("api_auth", "ja")
    assert "openai" not in u.error_message and "whitelist" not in u.error_message


# --- the CLI's error lines ---

def test_settings_errors_name_the_variable(monkeypatch):
    from vibeinsight.cli.common import describe
    from vibeinsight.settings import Settings

    monkeypatch.setenv("VIBEINSIGHT_MAX_BYTES", "lots")
    with pytest.raises(ValidationError) as info:
        Settings()
    code, message, exit_code = describe(info.value)
    assert (code, exit_code) == ("invalid_setting", 2)
    assert "VIBEINSIGHT_MAX_BYTES" in message and "'lots'" in message and "\n" not in message
    monkeypatch.delenv("VIBEINSIGHT_MAX_BYTES")
    monkeypatch.setenv("VIBEINSIGHT_STORAGE", "ftp")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "VIBEINSIGHT_STORAGE" in describe(info.value)[1]


def test_exceptions_become_codes_and_exit_codes():
    from vibeinsight.cli.common import describe

    class OperationalError(Exception):  # psycopg's name for "the server is not there"
        pass

    assert describe(InputRejected("bad", "not_audio"))[::2] == ("not_audio", 2)
    assert describe(OperationalError("connection refused\nmore"))[0::2] == ("unavailable", 1)
    assert describe(ConnectionRefusedError("nope"))[0::2] == ("unavailable", 1)
    code, message, exit_code = describe(KeyError("x"))
    assert (code, exit_code) == ("internal", 1) and message.startswith("KeyError")


# --- the background status writer ---

def _u(status=Status.RUNNING, progress=0):
    return StatusUpdate(session_id="s", status=status, seq=next_seq(), progress=progress)


def test_a_store_that_hangs_never_stalls_the_caller():
    release = threading.Event()
    written: list[StatusUpdate] = []

    def slow(u):
        release.wait(30)
        written.append(u)

    w = CoalescingWriter(slow, min_interval=0.0)
    for p in range(500):  # all handed over while the first write is still stuck in the store
        w.submit(_u(progress=p % 100))
    assert not release.is_set() and not written
    release.set()
    assert w.final(_u(Status.COMPLETED, 100), wait_s=30)
    assert written[-1].status is Status.COMPLETED
    assert len(written) < 10  # the stuck writes were coalesced, not queued up: the queue is bounded


def test_a_down_store_is_backed_off_and_the_final_state_lands_when_it_returns():
    up = threading.Event()
    calls: list[StatusUpdate] = []

    def store(u):
        calls.append(u)
        if not up.is_set():
            raise ConnectionError("store down")

    w = CoalescingWriter(store, min_interval=0.0, backoff=0.05, max_backoff=0.4)
    done: list[bool] = []
    for p in range(2000):
        w.submit(_u(progress=p % 100))
    wait_for(lambda: w.failures >= 4, 10, 0.02, "a few failed writes")
    t = threading.Thread(target=lambda: done.append(w.final(_u(Status.FAILED), wait_s=30)))
    t.start()
    wait_for(lambda: w.failures >= 6, 10, 0.02, "the terminal write to be retried")
    assert len(calls) < 50  # backed off: far fewer tries than updates
    up.set()
    t.join(30)
    assert done == [True] and calls[-1].status is Status.FAILED and w.writes == 1


def test_the_final_write_is_given_up_only_after_its_time(tmp_path: Path):
    def down(u):
        raise ConnectionError("down for good")

    w = CoalescingWriter(down, min_interval=0.0, backoff=0.01, max_backoff=0.02, give_up_s=0.3)
    assert w.final(_u(Status.FAILED), wait_s=30) is False
    assert w.failures >= 3 and w.writes == 0


# --- the ffmpeg rules (the command lines; tests/test_hostile_input.py runs them on real files) ---

def test_every_input_is_a_file_of_an_allowed_container():
    from vibeinsight.audio import ffmpeg

    assert ffmpeg.demuxer_of("mov,mp4,m4a,3gp,3g2,mj2") == "mov"
    assert ffmpeg.demuxer_of("matroska,webm") == "matroska"
    for name in ("hls", "dash", "concat", "image2", "lavfi", "webm_dash_manifest"):
        assert _code(ffmpeg.demuxer_of, name) == "unsupported_format"
    args = ffmpeg.input_args(Path("rel/concat:a|b.wav"), "mp3", 14402.0)
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    assert set(args[args.index("-format_whitelist") + 1].split(",")) == set(ffmpeg.DEMUXERS)
    assert args[args.index("-f") + 1] == "mp3" and args[args.index("-t") + 1] == "14402.000"
    assert args[-2] == "-i" and args[-1].startswith("file:/") and args[-1].endswith("rel/concat:a|b.wav")
    assert ffmpeg.refused_demuxer("[hls @ 0x55d] Format not on whitelist 'wav,mp3'\n") == "hls"
    assert not ffmpeg.is_media_demuxer("png_pipe") and ffmpeg.is_media_demuxer("hls")
