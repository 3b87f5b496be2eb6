import random
import threading

import pytest

from blocks.status_store import SQLiteStatusStore
from vibeinsight.schemas import Status, StatusUpdate

pytestmark = pytest.mark.unit


def _store(tmp_path):
    return SQLiteStatusStore(path=str(tmp_path / "status.db"))


def test_newer_seq_wins_older_is_ignored(tmp_path):
    s = _store(tmp_path)
    assert s.apply(StatusUpdate(session_id="a", status=Status.RUNNING, seq=10, flow_run_id="r1", stage="ingest", progress=2))
    assert s.apply(StatusUpdate(session_id="a", status=Status.RUNNING, seq=30, stage="transcribe", progress=40))
    assert not s.apply(StatusUpdate(session_id="a", status=Status.RUNNING, seq=20, stage="transcode", progress=10))
    row = s.get("a")
    assert (row.stage, row.progress, row.flow_run_id, row.seq) == ("transcribe", 40, "r1", 30)


def test_terminal_state_is_final_for_the_same_run(tmp_path):
    s = _store(tmp_path)
    s.apply(StatusUpdate(session_id="a", status=Status.COMPLETED, seq=5, flow_run_id="r1", progress=100))
    assert not s.apply(StatusUpdate(session_id="a", status=Status.RUNNING, seq=6, flow_run_id="r1"))
    assert not s.apply(StatusUpdate(session_id="a", status=Status.RUNNING, seq=7))
    assert s.get("a").status is Status.COMPLETED  # final for its run (FAILED is not: tests/test_faults_status.py)
    # a re-run of the session (another flow run) may start it again
    assert s.apply(StatusUpdate(session_id="a", status=Status.RUNNING, seq=8, flow_run_id="r2", progress=0))
    row = s.get("a")
    assert row.status is Status.RUNNING and row.error_code is None and row.flow_run_id == "r2"


def test_concurrent_out_of_order_writers_keep_the_newest(tmp_path):
    s = _store(tmp_path)
    updates = [StatusUpdate(session_id="c", status=Status.RUNNING, seq=i, progress=i % 100) for i in range(1, 201)]
    random.Random(7).shuffle(updates)

    def write(chunk):
        for u in chunk:
            s.apply(u)

    threads = [threading.Thread(target=write, args=(updates[i::4],)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert s.get("c").seq == 200 and s.get("c").progress == 0


def test_unknown_session_is_none(tmp_path):
    assert _store(tmp_path).get("nope") is None
