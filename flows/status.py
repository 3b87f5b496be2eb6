"""Mirror a session's state into the status store: stage updates and flow-run state hooks.

Both paths go through one CoalescingWriter per session, so together they keep to
the rate limit, and local listeners (the CLI's progress bar) see every update.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from blocks import registry
from vibeinsight.errors import error_code
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.settings import get_settings
from vibeinsight.throttle import CoalescingWriter, next_seq

Listener = Callable[[StatusUpdate], None]

_listeners: list[Listener] = []
_writers: dict[str, CoalescingWriter] = {}
_lock = threading.Lock()


def add_listener(fn: Listener) -> None:
    _listeners.append(fn)


def remove_listener(fn: Listener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def _writer(session_id: str) -> CoalescingWriter:
    with _lock:
        if session_id not in _writers:
            store = registry.status_store()
            _writers[session_id] = CoalescingWriter(store.apply, get_settings().status_min_interval_s)
        return _writers[session_id]


def write_stats(session_id: str) -> tuple[int, int]:
    """(writes, payload bytes) of this session's row so far, for the usage ledger."""
    with _lock:
        writer = _writers.get(session_id)
    return (writer.writes, writer.bytes_written) if writer else (0, 0)


def slow_down(session_id: str, min_interval: float) -> None:
    """Write this session's row at most once per min_interval from now on."""
    _writer(session_id).slow_down(min_interval)


def publish(update: StatusUpdate) -> None:
    for fn in list(_listeners):
        try:
            fn(update)
        except Exception:  # a listener must not break the run
            pass
    if update.status.terminal:
        _writer(update.session_id).final(update)
        with _lock:
            _writers.pop(update.session_id, None)
    else:
        _writer(update.session_id).submit(update)


class StageReporter:
    """What the flow body calls: report(stage, fraction of that stage)."""

    # Share of the bar each stage takes, in pipeline order.
    SPANS = {"ingest": (0, 5), "transcode": (5, 20), "transcribe": (20, 90), "analyze": (90, 95), "publish": (95, 99)}

    def __init__(self, session_id: str, flow_run_id: str | None, user_id: str | None) -> None:
        self.session_id, self.flow_run_id, self.user_id = session_id, flow_run_id, user_id
        self._last: tuple[str, int] | None = None

    def report(self, stage: str, fraction: float = 0.0) -> None:
        lo, hi = self.SPANS[stage]
        progress = int(lo + (hi - lo) * min(1.0, max(0.0, fraction)))
        if self._last == (stage, progress):
            return
        self._last = (stage, progress)
        publish(StatusUpdate(session_id=self.session_id, status=Status.RUNNING, seq=next_seq(),
                             flow_run_id=self.flow_run_id, user_id=self.user_id, stage=stage, progress=progress))


# --- Prefect state hooks: hook(flow, flow_run, state), parameter names as Prefect calls them ---

def _ids(flow_run) -> tuple[str, str | None]:
    params = flow_run.parameters or {}
    return str(params.get("session_id") or flow_run.id), params.get("user_id")


def _mirror(flow_run, status: Status, **fields) -> None:
    session_id, user_id = _ids(flow_run)
    publish(StatusUpdate(session_id=session_id, status=status, seq=next_seq(), flow_run_id=str(flow_run.id),
                         user_id=user_id, **fields))


def on_running(flow, flow_run, state) -> None:
    _mirror(flow_run, Status.RUNNING, stage="ingest", progress=0)


def on_completion(flow, flow_run, state) -> None:
    session_id, _ = _ids(flow_run)
    _mirror(flow_run, Status.COMPLETED, stage="done", progress=100, result_key=result_key(session_id))


def on_failure(flow, flow_run, state) -> None:
    exc = state.result(raise_on_failure=False) if state.data is not None else None
    code = error_code(exc) if isinstance(exc, BaseException) else "internal"
    message = (getattr(exc, "message", None) or str(exc or state.message or "failed"))[:500]
    _mirror(flow_run, Status.FAILED, error_code=code, error_message=message, result_key=result_key(_ids(flow_run)[0]))


def on_crashed(flow, flow_run, state) -> None:
    _mirror(flow_run, Status.CRASHED, error_code="crashed", error_message=(state.message or "crashed")[:500])


def on_cancellation(flow, flow_run, state) -> None:
    _mirror(flow_run, Status.CANCELLED, error_code="cancelled", error_message=(state.message or "cancelled")[:500])


def result_key(session_id: str) -> str:
    return f"results/{session_id}.json"


HOOKS = dict(on_running=[on_running], on_completion=[on_completion], on_failure=[on_failure],
             on_crashed=[on_crashed], on_cancellation=[on_cancellation])

