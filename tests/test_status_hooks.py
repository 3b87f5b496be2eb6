"""The flow side of the mirror: stage updates and hooks share one spaced, coalescing writer."""

from __future__ import annotations

import threading
import time
import uuid
from itertools import pairwise
from types import SimpleNamespace

import pytest
from prefect.states import Completed, Failed, Running

from flows import status_hooks as status
from vibeinsight.errors import TranscodeFailed, user_message
from vibeinsight.schemas import MAX_MESSAGE_BYTES, Status

pytestmark = pytest.mark.unit


class SlowStore:
    """A store whose writes take a while, recording when each write started: the start the session's
    writer booked (its clock, read under its lock before it calls the store). A reading of our own here
    can come late on a loaded machine, and then two writes look closer than they started (a clock-shifted
    run beside CI's main run measured 0.188 s); the next start can only be booked after this returns."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.starts, self.updates, self.writer = seconds, [], [], None
        self.lock = threading.Lock()

    def apply(self, update, deployment=None):
        with self.lock:
            # the session's writer, kept: the terminal update takes it out of the hooks' table first
            self.writer = self.writer or status._writers[update.session_id]
            self.starts.append(self.writer._last_start)
            self.updates.append(update)
        time.sleep(self.seconds)  # a slow store on purpose: what the spacing must survive
        return True


def test_writes_are_spaced_by_the_interval_even_when_the_store_is_slow(monkeypatch):
    store = SlowStore(0.05)
    monkeypatch.setattr(status.registry, "status_store", lambda *a, **k: store)
    monkeypatch.setattr(status, "get_settings", lambda: SimpleNamespace(status=SimpleNamespace(
        min_interval_s=0.2, final_wait_s=10.0, final_give_up_s=10.0)))

    sid = str(uuid.uuid4())
    run = SimpleNamespace(id=uuid.uuid4(), parameters={"session_id": sid})
    status.mirror_state(None, run, Running())
    reporter = status.StageReporter(sid, str(run.id), None)
    began = time.monotonic()
    for i in range(300):  # 1.5 s of progress calls at 200 a second (longer on a loaded machine)
        reporter.report("transcribe", i / 300)
        time.sleep(0.005)  # the pace of the calls is what is under test
    calls_s = time.monotonic() - began
    status.mirror_state(None, run, Completed())

    gaps = [b - a for a, b in pairwise(store.starts)]
    assert min(gaps) >= 0.2 - 1e-9, gaps  # a write started right behind a timed flush would show ~0.05
    # coalesced: at most one write per interval while the calls lasted (measured, so a slow machine only
    # loosens it), plus RUNNING and the final; progress reached the store in between
    assert len(store.updates) <= calls_s / 0.2 + 3 < 300
    assert any(u.status is Status.RUNNING and u.progress for u in store.updates[1:-1])
    assert store.updates[-1].status is Status.COMPLETED and store.updates[-1].progress == 100
    seqs = [u.seq for u in store.updates]
    assert seqs == sorted(seqs)


class RecordingStore:
    def __init__(self) -> None:
        self.updates = []

    def apply(self, update, deployment=None):
        self.updates.append(update)
        return True


@pytest.fixture()
def recording(monkeypatch):
    store = RecordingStore()
    monkeypatch.setattr(status.registry, "status_store", lambda *a, **k: store)
    monkeypatch.setattr(status, "get_settings", lambda: SimpleNamespace(status=SimpleNamespace(
        min_interval_s=0.0, final_wait_s=10.0, final_give_up_s=10.0)))
    return store


def test_every_hook_is_one_function_and_the_session_defaults_to_the_run(recording):
    assert set(status.HOOKS) == {"on_running", "on_completion", "on_failure", "on_crashed", "on_cancellation"}
    assert all(hooks == [status.mirror_state] for hooks in status.HOOKS.values())
    user = str(uuid.uuid4())
    run = SimpleNamespace(id=uuid.uuid4(), parameters={"user_id": user})  # no session id given
    status.mirror_state(None, run, Running())
    status.mirror_state(None, run, Completed())
    running, done = recording.updates
    assert running.session_id == done.session_id == str(run.id) and done.user_id == user
    assert (running.status, running.stage, running.progress) == (Status.RUNNING, "ingest", 0)
    assert (done.status, done.progress, done.result_key) == (Status.COMPLETED, 100, f"results/{run.id}.json")
    assert running.seq < done.seq


def test_a_failure_keeps_the_runs_reason_code_and_clips_its_message(recording):
    sid = str(uuid.uuid4())
    run = SimpleNamespace(id=uuid.uuid4(), parameters={"session_id": sid})
    status.mirror_state(None, run, Failed(data=TranscodeFailed("音声を解析できません。" * 100, "corrupt")))
    (u,) = recording.updates
    assert (u.status, u.error_code, u.result_key) == (Status.FAILED, "corrupt", f"results/{sid}.json")
    # users read the code's fixed sentence, never the error's own text
    assert u.error_message == user_message("corrupt") and len(u.error_message.encode()) <= MAX_MESSAGE_BYTES
    # a failed state without the exception (as the API reports it) still says it failed
    other = SimpleNamespace(id=uuid.uuid4(), parameters={"session_id": str(uuid.uuid4())})
    status.mirror_state(None, other, Failed(message="Flow run encountered an exception"))
    assert (recording.updates[-1].error_code, recording.updates[-1].error_message) == (
        "failed", user_message("failed"))
