"""One status rule: every writer gets the same row update for the same state."""

from __future__ import annotations

import pytest

from vibeinsight.errors import InputRejected, user_message
from vibeinsight.schemas import MAX_MESSAGE_BYTES, Status, StatusUpdate
from vibeinsight.status_rule import next_seq, result_key, seq_of, update_for_state

pytestmark = pytest.mark.unit

IDS = dict(session_id="0d1c2b3a-4f5e-4d6c-8b7a-9f8e7d6c5b4a", flow_run_id="run-1", user_id="user-1")


@pytest.mark.parametrize(("state", "status", "fields"), [
    ("SCHEDULED", Status.PENDING, {}),
    ("PENDING", Status.PENDING, {}),
    ("RUNNING", Status.RUNNING, {"stage": "ingest", "progress": 0}),
    ("COMPLETED", Status.COMPLETED, {"stage": "done", "progress": 100, "result_key": result_key(IDS["session_id"])}),
    # users read the code's fixed sentence, never the state's own text ("boom")
    ("FAILED", Status.FAILED, {"error_code": "failed", "error_message": user_message("failed"),
                               "result_key": result_key(IDS["session_id"])}),
    ("CRASHED", Status.CRASHED, {"error_code": "crashed", "error_message": user_message("crashed")}),
    ("CANCELLED", Status.CANCELLED, {"error_code": "cancelled", "error_message": user_message("cancelled")}),
])
def test_each_state_type_gives_its_row(state, status, fields):
    u = update_for_state(state, seq=7, message="boom", **IDS)
    assert u.status is status and u.seq == 7 and u.flow_run_id == "run-1" and u.user_id == "user-1"
    got = u.model_dump(include=set(fields))
    assert got == fields


@pytest.mark.parametrize("state", ["CANCELLING", "PAUSED", "", "UNKNOWN"])
def test_passing_states_write_nothing(state):
    assert update_for_state(state, seq=1, **IDS) is None


def test_the_run_error_gives_code_and_its_fixed_message():
    u = update_for_state("FAILED", seq=1, message="state text", error=InputRejected("no audio stream", "not_audio"),
                         **IDS)
    assert (u.error_code, u.error_message) == ("not_audio", user_message("not_audio"))
    assert "no audio stream" not in u.error_message
    u = update_for_state("FAILED", seq=1, error=RuntimeError("x"), **IDS)
    assert u.error_code == "internal"


def test_a_state_without_message_still_says_what_happened():
    assert update_for_state("CRASHED", seq=1, **IDS).error_message == user_message("crashed")


def test_messages_are_clipped_by_the_schema_on_a_character_boundary():
    long = "音声" * 400  # 3 UTF-8 bytes a character
    u = StatusUpdate(session_id="s", status=Status.FAILED, seq=1, error_message=long)
    assert len(u.error_message.encode()) <= MAX_MESSAGE_BYTES
    assert u.error_message.endswith("…") and u.error_message[:-1] == long[: len(u.error_message) - 1]
    assert StatusUpdate(session_id="s", status=Status.FAILED, seq=1, error_message="short").error_message == "short"


def test_sequence_clock_is_monotonic_and_matches_state_timestamps():
    a, b = next_seq(), next_seq()
    assert b > a
    assert seq_of("1970-01-01T00:00:01.000002+00:00") == 1_000_002
    assert seq_of("1970-01-01T00:00:01") == 1_000_000  # naive means UTC
