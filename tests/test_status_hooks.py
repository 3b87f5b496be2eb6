"""The flow side of the mirror: stage updates and hooks share one spaced, coalescing writer."""

from __future__ import annotations

import threading
import time
import uuid

from flows import status
from vibeinsight.schemas import Status


class SlowStore:
    """A store whose writes take a while, recording when each write started."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.starts, self.updates = seconds, [], []
        self.lock = threading.Lock()

    def apply(self, update, deployment=None):
        with self.lock:
            self.starts.append(time.monotonic())
            self.updates.append(update)
        time.sleep(self.seconds)
        return True


def test_writes_are_spaced_by_the_interval_even_when_the_store_is_slow(monkeypatch):
    store = SlowStore(0.05)
    monkeypatch.setattr(status.registry, "status_store", lambda *a, **k: store)
    monkeypatch.setattr(status, "get_settings", lambda: type("S", (), {"status_min_interval_s": 0.2})())

    class Run:
        id, parameters = uuid.uuid4(), None

    run = Run()
    sid = str(uuid.uuid4())
    run.parameters = {"session_id": sid}
    status.on_running(None, run, None)
    reporter = status.StageReporter(sid, str(run.id), None)
    for i in range(300):  # 1.5 s of progress calls at 200 a second
        reporter.report("transcribe", i / 300)
        time.sleep(0.005)
    status.on_completion(None, run, None)

    gaps = [b - a for a, b in zip(store.starts, store.starts[1:])]
    assert min(gaps) >= 0.19, gaps  # a write started right behind a timed flush would show ~0.05
    assert 4 <= len(store.updates) <= 12  # coalesced: 300 calls became a handful of writes
    assert store.updates[-1].status is Status.COMPLETED and store.updates[-1].progress == 100
    seqs = [u.seq for u in store.updates]
    assert seqs == sorted(seqs)
