"""Issue 20's rules without a server: a run's attempt from its idempotency key, who may write a session,
the observer's confirmation of terminal states, and local storage reading only uploads."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from blocks.storage import LocalBucket
from deployments.status_observer import RunSession
from vibeinsight.errors import InputRejected, user_message
from vibeinsight.schemas import Status, StatusRow
from vibeinsight.status_rule import attempt_of, conflict_with, idempotency_key, seq_of

pytestmark = pytest.mark.unit

SID = "5b0f3c52-3f7e-4c43-9a43-1d2c8c7f0a01"
OWNER, OTHER = "0e7f1a9e-3d53-4f3c-8d2f-3f0f6c9e2b11", "1e7f1a9e-3d53-4f3c-8d2f-3f0f6c9e2b11"
T0 = datetime(2026, 11, 29, 1, 0, 0, tzinfo=timezone.utc)


def test_the_attempt_is_read_back_from_the_idempotency_key():
    for attempt in (0, 1, 7):
        assert attempt_of(idempotency_key(SID, attempt), SID) == attempt
    assert idempotency_key(SID, 0) == SID and idempotency_key(SID, 2) == f"{SID}:rerun:2"  # as routes.ts makes them
    for key in (None, "", "other", f"{SID}:rerun:", f"{SID}:rerun:0", f"{SID}:rerun:-1", f"{SID}:rerun:x",
                f"{uuid.uuid4()}:rerun:1", f"{SID}:other:1"):
        assert attempt_of(key, SID) is None, key


def _row(user=OWNER, attempt=0, run="run-1") -> StatusRow:
    return StatusRow(session_id=SID, user_id=user, attempt=attempt, flow_run_id=run, status=Status.COMPLETED,
                     updated_at=T0)


def test_who_may_write_a_session():
    assert conflict_with(None, None, None, "r") is None  # a new session
    assert conflict_with(_row(user=None, attempt=None), None, None, "r") is None  # the CLI's rows
    assert conflict_with(_row(), OWNER, 0, "run-1") is None
    assert conflict_with(_row(run=None), OWNER, 0, "run-9") is None  # the current attempt, its id not written yet
    assert "another user" in conflict_with(_row(), OTHER, 0, "run-1")
    assert "names none" in conflict_with(_row(), None, 0, "run-1")
    assert "current run" in conflict_with(_row(), OWNER, None, "run-x")  # the Prefect UI or API, no request
    assert "current run" in conflict_with(_row(attempt=2), OWNER, 1, "run-1")  # an older attempt
    assert "current run" in conflict_with(_row(), OWNER, 0, "run-2")  # another run of the attempt


def test_session_conflict_has_fixed_sentences():
    assert user_message("session_conflict") != user_message("no-such-code")
    assert user_message("session_conflict", "ja") != user_message("session_conflict")


# --- the observer: a terminal event is written only as the Prefect API confirms it ---

def _obs(tmp_path, prefect: dict):
    from deployments.status_observer import StatusObserver
    from tests.test_status_observer import RecordingStore, _event

    store = RecordingStore(path=str(tmp_path / "s.db"))

    async def read_state(run_id):
        return prefect.get(run_id)

    return StatusObserver(store=store, backoff_s=0.01, terminal_grace_s=0, read_state=read_state), store, _event


def test_a_terminal_event_the_api_does_not_confirm_is_not_written(tmp_path):
    run, sid = str(uuid.uuid4()), str(uuid.uuid4())
    prefect = {run: ("RUNNING", T0)}
    obs, store, event = _obs(tmp_path, prefect)
    obs._runs[run] = RunSession(sid, None, None, 0)

    async def go():
        await obs.handle(event(run, "RUNNING", T0))
        await obs.handle(event(run, "COMPLETED", T0 + timedelta(seconds=5)))  # forged: Prefect says RUNNING
        prefect[run] = ("FAILED", T0 + timedelta(seconds=8))
        await obs.handle(event(run, "FAILED", T0 + timedelta(seconds=8)))

    asyncio.run(go())
    assert [u.status for u, _ in store.sent] == [Status.RUNNING, Status.FAILED]
    assert all(u.attempt == 0 for u, _ in store.sent)  # the run's attempt goes with every write
    row = store.get(sid)
    assert row.status is Status.FAILED and row.seq == seq_of(T0 + timedelta(seconds=8))


def test_the_confirmed_time_is_the_apis(tmp_path):
    run, sid = str(uuid.uuid4()), str(uuid.uuid4())
    obs, store, event = _obs(tmp_path, {run: ("CRASHED", T0)})
    obs._runs[run] = RunSession(sid, None)
    # the event claims a time far ahead (a forged or skewed event): the row takes Prefect's state time
    asyncio.run(obs.handle(event(run, "CRASHED", T0 + timedelta(days=365))))
    assert store.get(sid).seq == seq_of(T0)


# --- local storage reads only uploads ---

def _bucket(tmp_path) -> LocalBucket:
    bucket = LocalBucket(root=str(tmp_path / "bucket"))
    bucket.uploads_dir().mkdir(parents=True)
    return bucket


def _code(fn, *args) -> str:
    with pytest.raises(InputRejected) as info:
        fn(*args)
    return info.value.code


def test_a_source_outside_the_uploads_folder_is_not_allowed(tmp_path):
    bucket = _bucket(tmp_path)
    secret = tmp_path / "elsewhere" / "victim.wav"
    secret.parent.mkdir()
    secret.write_bytes(b"RIFF")
    work = tmp_path / "work"
    for source in (str(secret), f"file://{secret}", str(bucket.uploads_dir() / ".." / "results" / "x.json"),
                   str(tmp_path / "bucket" / "results" / "x.json")):
        assert _code(bucket.fetch, source, work) == "source_not_allowed", source
    # a symlink inside the uploads pointing out, and a folder symlink: resolved, then refused
    (bucket.uploads_dir() / "link.wav").symlink_to(secret)
    (bucket.uploads_dir() / "dir").symlink_to(secret.parent, target_is_directory=True)
    for source in (bucket.uploads_dir() / "link.wav", bucket.uploads_dir() / "dir" / "victim.wav"):
        assert _code(bucket.fetch, str(source), work) == "source_not_allowed", source
    assert not work.exists() or not any(work.iterdir())  # nothing was copied


def test_an_upload_is_read_and_a_missing_one_is_not_found(tmp_path):
    bucket = _bucket(tmp_path)
    upload = bucket.uploads_dir() / "u" / "a.wav"
    upload.parent.mkdir()
    upload.write_bytes(b"x" * 100)
    got = bucket.fetch(str(upload), tmp_path / "work")
    assert got.bytes == 100 and got.path.read_bytes() == b"x" * 100
    assert _code(bucket.fetch, str(bucket.uploads_dir() / "u" / "gone.wav"), tmp_path / "work") == "not_found"


def test_place_upload_links_the_file_among_the_uploads(tmp_path):
    bucket = _bucket(tmp_path)
    src = tmp_path / "meeting.wav"
    src.write_bytes(b"audio")
    placed = bucket.place_upload(src, OWNER)
    path = os.path.realpath(placed)
    assert path.startswith(str(bucket.uploads_dir() / OWNER)) and placed.endswith("/meeting.wav")
    assert os.stat(placed).st_ino == src.stat().st_ino  # a hard link: no copy
    assert bucket.place_upload(placed) == placed  # already an upload: stays
    assert bucket.fetch(placed, tmp_path / "work").bytes == 5
    missing = bucket.place_upload(tmp_path / "missing.wav")
    assert not os.path.exists(missing) and _code(bucket.fetch, missing, tmp_path / "w2") == "not_found"


def test_place_upload_copies_where_links_are_not_allowed(tmp_path, monkeypatch):
    bucket = _bucket(tmp_path)
    src = tmp_path / "meeting.wav"
    src.write_bytes(b"audio")

    def no_link(*_a):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    placed = bucket.place_upload(src)
    assert os.stat(placed).st_ino != src.stat().st_ino and open(placed, "rb").read() == b"audio"
    assert src.read_bytes() == b"audio"  # the file itself is never changed


def test_each_run_works_in_a_folder_of_its_own(home):
    from flows.process_audio import Run
    from vibeinsight.settings import get_settings

    settings = get_settings()
    runs = [Run(SID, OWNER, str(uuid.uuid4()), settings, 0) for _ in range(2)]
    assert runs[0].workspace != runs[1].workspace  # two runs of one session: two folders
    assert all(r.workspace == (settings.work_dir / r.flow_run_id).resolve() for r in runs)


def test_a_local_file_is_placed_among_the_uploads(home, tmp_path):
    from blocks import registry
    from blocks.storage import as_upload

    src = tmp_path / "talk.wav"
    src.write_bytes(b"audio")
    placed = as_upload(registry.storage(), str(src), OWNER)
    assert placed.startswith(str((home / "bucket" / "uploads" / OWNER).resolve())) and open(placed, "rb").read() == b"audio"
    assert as_upload(registry.storage(), "s3://bucket/uploads/x.wav", OWNER) == "s3://bucket/uploads/x.wav"
