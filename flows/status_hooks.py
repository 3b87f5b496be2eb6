"""The flow's status hooks: stage updates from its tasks and its flow-run state hooks, mirrored into
the status store through the one status rule (vibeinsight.status_rule).

Both paths go through one CoalescingWriter per session, so together they keep to
the rate limit, and local listeners (the CLI's progress bar) see every update. The writer
does the I/O on its own thread: a slow or absent status store never stalls the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from blocks import registry
from blocks.status_store import StatusStore
from vibeinsight import tracing
from vibeinsight.params import row_ids
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.settings import get_settings
from vibeinsight.status_rule import attempt_of, next_seq, update_for_state
from vibeinsight.throttle import CoalescingWriter

log = logging.getLogger("vibeinsight.status")
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
            _writers[session_id] = CoalescingWriter(lambda u: traced_apply(store, u), get_settings().status.min_interval_s,
                                                    give_up_s=get_settings().status.final_give_up_s)
        return _writers[session_id]


def traced_apply(store: StatusStore, update: StatusUpdate) -> bool:
    """One status write, as a span of the session's trace (the writer thread has no current span)."""
    with tracing.span("status.write", update.session_id, status=update.status.value, stage=update.stage,
                      progress=update.progress, bytes=len(update.model_dump_json(exclude_none=True))) as span:
        changed = store.apply(update)
        tracing.set_attributes(span, changed=changed)
        return changed


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
        except Exception:  # noqa: BLE001 - a listener must not break the run
            pass
    if update.status.terminal:
        writer = _writer(update.session_id)
        with _lock:
            _writers.pop(update.session_id, None)
        # The run is over: wait (bounded) for the terminal row, retried while the store is down;
        # past the wait the observer and reconcile-status still repair the row.
        if not writer.final(update, get_settings().status.final_wait_s):
            log.warning("terminal status of %s not written yet (store down?)", update.session_id)
    else:
        _writer(update.session_id).submit(update)


class StageReporter:
    """What the flow body calls: report(stage, fraction of that stage)."""

    # Share of the bar each stage takes, in pipeline order.
    SPANS = {"ingest": (0, 5), "transcode": (5, 20), "transcribe": (20, 90), "analyze": (90, 95), "publish": (95, 99)}

    def __init__(self, session_id: str, flow_run_id: str | None, user_id: str | None,
                 attempt: int | None = None) -> None:
        self.session_id, self.flow_run_id, self.user_id, self.attempt = session_id, flow_run_id, user_id, attempt
        self._last: tuple[str, int] | None = None

    def report(self, stage: str, fraction: float = 0.0) -> None:
        lo, hi = self.SPANS[stage]
        progress = int(lo + (hi - lo) * min(1.0, max(0.0, fraction)))
        if self._last == (stage, progress):
            return
        self._last = (stage, progress)
        publish(StatusUpdate(session_id=self.session_id, status=Status.RUNNING, seq=next_seq(),
                             flow_run_id=self.flow_run_id, user_id=self.user_id, stage=stage, progress=progress,
                             attempt=self.attempt))


# --- Prefect state hooks: hook(flow, flow_run, state), parameter names as Prefect calls them ---

def _ids(flow_run) -> tuple[str, str | None]:
    return row_ids(flow_run.parameters or {}, str(flow_run.id))


def run_attempt(flow_run, session_id: str) -> int | None:
    """The session's run request this flow run is (its idempotency key): the row takes its writes
    only while it is the current one."""
    return attempt_of(getattr(flow_run, "idempotency_key", None), session_id)


def mirror_state(flow, flow_run, state) -> None:
    """Every state hook: the row the status rule gives for this state, with the run's own error."""
    session_id, user_id = _ids(flow_run)
    error = None
    if state.is_failed() and state.data is not None:
        result = state.result(raise_on_failure=False)
        error = result if isinstance(result, BaseException) else None
    update = update_for_state(state.type.value, session_id=session_id, flow_run_id=str(flow_run.id),
                              user_id=user_id, seq=next_seq(), message=state.message, error=error,
                              language=(flow_run.parameters or {}).get("language"),
                              attempt=run_attempt(flow_run, session_id))
    if update is not None:
        publish(update)


HOOKS = dict(on_running=[mirror_state], on_completion=[mirror_state], on_failure=[mirror_state],
             on_crashed=[mirror_state], on_cancellation=[mirror_state])
