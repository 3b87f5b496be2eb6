import threading
import time
from itertools import pairwise

import pytest

from tests.waiting import wait_for
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.status_rule import next_seq
from vibeinsight.throttle import CoalescingWriter

pytestmark = pytest.mark.unit


def _u(status=Status.RUNNING, progress=0):
    return StatusUpdate(session_id="s", status=status, seq=next_seq(), progress=progress)


def test_seq_strictly_increases_across_threads():
    seen = []
    lock = threading.Lock()

    def grab():
        for _ in range(500):
            v = next_seq()
            with lock:
                seen.append(v)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(seen)) == len(seen)


def test_writes_are_spaced_and_coalesced_and_final_kept():
    writes: list[tuple[float, StatusUpdate]] = []
    # Each write's start as the writer booked it (its clock, read under its lock before it calls us):
    # a reading of our own here can come late on a loaded machine, and then two writes look closer
    # than they started. The next start can only be booked after this call returns.
    w = CoalescingWriter(lambda u: writes.append((w._last_start, u)), min_interval=0.2)
    for p in range(0, 60):
        w.submit(_u(progress=p))
        time.sleep(0.01)  # a steady stream of updates: the pace is what is under test
    w.final(_u(Status.COMPLETED, 100))
    times = [t for t, _ in writes]
    assert all(b - a >= 0.2 for a, b in pairwise(times))
    # coalesced: at most one write per interval of the stream's own length (however slow this machine
    # ran it), plus the first and the final; one write per update would be 61
    assert len(writes) <= (times[-1] - times[0]) / 0.2 + 2 < 61
    assert writes[-1][1].status is Status.COMPLETED and writes[-1][1].progress == 100
    assert w.writes == len(writes)
    assert w.bytes_written == sum(len(u.model_dump_json(exclude_none=True)) for _, u in writes)
    seqs = [u.seq for _, u in writes]
    assert seqs == sorted(seqs)


def test_updates_during_a_write_collapse_into_the_latest():
    """By event order, not timing: while one write is held in flight, 58 more updates arrive; only the
    latest of them is written after it, then the final."""
    writes: list[StatusUpdate] = []
    started, release = threading.Event(), threading.Event()

    def write(u: StatusUpdate) -> None:
        writes.append(u)
        if len(writes) == 1:
            started.set()
            release.wait(10)

    w = CoalescingWriter(write, min_interval=0.0)  # no spacing: only the write in flight holds updates back
    w.submit(_u(progress=0))
    assert started.wait(10)
    for p in range(1, 59):
        w.submit(_u(progress=p))
    release.set()
    wait_for(lambda: len(writes) >= 2, 10, 0.01, "the write after the held one")
    assert w.final(_u(Status.COMPLETED, 100), wait_s=10)
    assert [u.progress for u in writes] == [0, 58, 100] and writes[-1].status is Status.COMPLETED


def test_latest_pending_update_is_flushed_by_timer():
    """By event order, not timing: 2 and 3 arrive while 1 is being written (three quick submits could
    straddle the interval on a loaded machine, and 2 was then written); with no later submit, the
    writer's own timer writes the latest of them."""
    writes, writing, release = [], threading.Event(), threading.Event()

    def write(u):
        writes.append(u)
        writing.set()
        release.wait(5)

    w = CoalescingWriter(write, min_interval=0.1)
    w.submit(_u(progress=1))
    assert writing.wait(5)
    w.submit(_u(progress=2))
    w.submit(_u(progress=3))
    release.set()
    wait_for(lambda: len(writes) >= 2, 5, 0.02, "the timer to flush the pending update")
    time.sleep(0.3)  # no third write follows: 2 was replaced, not queued
    assert [u.progress for u in writes] == [1, 3]


def test_failing_store_never_raises_and_final_is_retried():
    calls = []

    def flaky(u):
        calls.append(u)
        if len(calls) < 3:
            raise ConnectionError("store down")

    w = CoalescingWriter(flaky, min_interval=0.0, backoff=0.01)
    w.final(_u(Status.FAILED))
    assert len(calls) == 3 and w.writes == 1 and w.failures == 2


def test_slow_down_spaces_writes_further_but_never_closer():
    writes: list[float] = []
    w = CoalescingWriter(lambda u: writes.append(w._last_start), min_interval=0.05)  # the booked start, as above
    w.slow_down(0.3)
    w.slow_down(0.1)  # a smaller interval does not undo the larger one
    for p in range(30):
        w.submit(_u(progress=p))
        time.sleep(0.02)  # a steady stream of updates: the pace is what is under test
    w.final(_u(Status.COMPLETED, 100))
    assert len(writes) >= 2
    assert all(b - a >= 0.3 for a, b in pairwise(writes))
