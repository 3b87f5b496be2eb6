"""vibeinsight.paid: which run attempt paid for a chunk, so that each billed call reaches the ledger once,
even when the attempt that paid died before it could book it (issue 21, point 5)."""

from __future__ import annotations

import pytest

from blocks.storage import WORKSPACE_PREFIX, run_prefixes
from vibeinsight import paid


@pytest.mark.unit
def test_chunks_of_an_unbooked_attempt_are_counted_and_booked_or_accounted_ones_never():
    asked: list[str] = []

    def booked(tag: str) -> bool:
        asked.append(tag)
        return tag == "earlier-run.booked"

    chunks = [("this.attempt", "u1"), ("crashed.part", "u2"), ("crashed.part", "u3"), ("earlier-run.booked", "u4"),
              (None, "u5"), ("crashed.part", None), ("crashed.parent", "u6")]
    found, attempts = paid.unbooked(chunks, {"this.attempt"}, booked)
    assert found == ["u2", "u3", "u6"]
    assert attempts == {"crashed.part", "crashed.parent"}
    assert sorted(asked) == ["crashed.parent", "crashed.part", "earlier-run.booked"]  # once per attempt


@pytest.mark.unit
def test_an_attempt_is_its_flow_run_and_this_process():
    assert paid.attempt_tag("run-a") == paid.attempt_tag("run-a") != paid.attempt_tag("run-b")
    assert paid.attempt_tag("run-a").startswith("run-a.")


@pytest.mark.unit
def test_the_booking_marker_lies_where_a_run_may_write():
    key = paid.booked_marker("5b0f3c52-3f7e-4c43-9a43-1d2c8c7f0a01", paid.attempt_tag("run-a"))
    assert key.startswith(WORKSPACE_PREFIX) and WORKSPACE_PREFIX in run_prefixes([])["write"]
    assert "5b0f3c52-3f7e-4c43-9a43-1d2c8c7f0a01" in key and key.endswith(paid.attempt_tag("run-a"))


@pytest.mark.integration
def test_a_part_attempts_usage_is_taken_once_and_never_when_an_earlier_run_booked_it(tmp_path):
    """The parent takes a part run attempt's billed calls once (flows/fan_out.py `_account`), and not at all
    when an earlier run of the session booked them: a parent re-run after a crash that still booked (a
    SIGTERM unwinds through the booking) reads the same part runs' results again."""
    from types import SimpleNamespace

    from blocks.storage import LocalBucket
    from flows.chunks import mark_booked
    from flows.fan_out import _account
    from vibeinsight.fanout import PartResult

    sid = "5b0f3c52-3f7e-4c43-9a43-1d2c8c7f0a01"
    storage = LocalBucket(root=str(tmp_path / "bucket"))
    calls = [{"service": "openai", "calls": 2, "audio_seconds": 12.0}]
    run = SimpleNamespace(session_id=sid, storage=storage, api_usage=[], accounted={paid.attempt_tag("parent")})
    part = PartResult(part=1, attempt=paid.attempt_tag("part-run-1"), usage=calls)
    _account(part, run)
    _account(part, run)
    assert [u.calls for u in run.api_usage] == [2] and part.attempt in run.accounted

    mark_booked({paid.attempt_tag("part-run-2")}, storage, sid)  # an earlier run of the parent booked it
    again = SimpleNamespace(session_id=sid, storage=storage, api_usage=[], accounted=set())
    _account(PartResult(part=2, attempt=paid.attempt_tag("part-run-2"), usage=calls), again)
    assert again.api_usage == []
