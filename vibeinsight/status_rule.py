"""The one rule from a flow run's state to its processing_status row update.

The flow's state hooks, the server-event observer and reconcile-status all call
`update_for_state`; the sequence clock (`next_seq`, `seq_of`) orders their writes, so the
row keeps the newest state whoever writes it. Prefect-free: states come in by their type name.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from vibeinsight.errors import error_code, user_message
from vibeinsight.schemas import SessionWriter, Status, StatusRow, StatusUpdate

# Prefect state types → our statuses. SCHEDULED is still waiting (PENDING); CANCELLING and
# PAUSED are passing states the row does not show.
log = logging.getLogger("vibeinsight.status")

STATE_STATUS = {
    "SCHEDULED": Status.PENDING, "PENDING": Status.PENDING, "RUNNING": Status.RUNNING,
    "COMPLETED": Status.COMPLETED, "FAILED": Status.FAILED, "CRASHED": Status.CRASHED,
    "CANCELLED": Status.CANCELLED,
}


def result_key(session_id: str) -> str:
    """Where a session's result document lives in the bucket."""
    return f"results/{session_id}.json"


def idempotency_key(session_id: str, attempt: int) -> str:
    """Prefect's idempotency key of a session's run `attempt` (0: the first run, then re-runs), as the Edge
    Function (routes.ts) and `vibeinsight trigger` create runs: one run per request_run() decision."""
    return session_id if attempt == 0 else f"{session_id}:rerun:{attempt}"


def attempt_of(key: str | None, session_id: str) -> int | None:
    """Which run request of the session a flow run is, from its idempotency key; None for a run no
    request_run() decision started (the Prefect UI or API, the CLI)."""
    if not key:
        return None
    if key == session_id:
        return 0
    head, _, tail = key.rpartition(":rerun:")
    return int(tail) if head == session_id and tail.isdigit() and int(tail) > 0 else None


def conflict_with(row: StatusRow | SessionWriter | None, user_id: str | None, attempt: int | None, flow_run_id: str | None) -> str | None:
    """Why a run may not write this session's row or result (None: it may). The same rule as
    public.apply_status_update: an owned row is written only by its owner's runs, and a row
    request_run() manages only by its current run."""
    if row is None:
        return None
    if row.user_id is not None and row.user_id != user_id:
        return "the session belongs to another user" if user_id else "the session has an owner and the run names none"
    if row.attempt is not None and (attempt != row.attempt or (row.flow_run_id and flow_run_id
                                                               and row.flow_run_id != flow_run_id)):
        return f"the run is not the session's current run (attempt {row.attempt})"
    return None


def seconds_ahead(seq: int, now: datetime | None = None) -> float:
    """How far a write's seq (its state's time) is ahead of this clock, in seconds (negative: behind)."""
    return (seq - seq_of(now or datetime.now(timezone.utc))) / 1e6


def update_for_state(state_type: str, *, session_id: str, flow_run_id: str | None, user_id: str | None,
                     seq: int, message: str | None = None, error: BaseException | None = None,
                     language: str | None = None, attempt: int | None = None) -> StatusUpdate | None:
    """The row update a state implies; None for a state the row does not show.

    `error` (the run's exception, where the writer has it) gives the reason code; without it a
    failure says `failed`. The row's error_message is the code's fixed sentence (in `language`,
    the run's requested language); the error's own text and the state's `message` are for the
    logs and the result document's error.detail, never for the row users read.
    """
    status = STATE_STATUS.get(state_type)
    if status is None:
        return None
    fields: dict[str, Any] = {}
    if status is Status.RUNNING:
        fields = dict(stage="ingest", progress=0)
    elif status is Status.COMPLETED:
        fields = dict(stage="done", progress=100, result_key=result_key(session_id))
    elif status is Status.FAILED:
        code = error_code(error) if error is not None else "failed"
        fields = dict(error_code=code, error_message=user_message(code, language), result_key=result_key(session_id))
    elif status in (Status.CRASHED, Status.CANCELLED):
        word = status.value.lower()
        fields = dict(error_code=word, error_message=user_message(word, language))
    if message and status.terminal:
        log.info("session %s: %s (%s)", session_id, status.value, message)
    return StatusUpdate(session_id=session_id, status=status, seq=seq, flow_run_id=flow_run_id, user_id=user_id,
                        attempt=attempt, **fields)


_seq_lock = threading.Lock()
_last_seq = 0


def next_seq() -> int:
    """Microseconds since the epoch, strictly increasing in this process.

    Wall-clock based so that writers in other processes (hooks after a crash, the
    server-event observer) order against it by the time of the state change.
    """
    global _last_seq
    with _seq_lock:
        _last_seq = max(_last_seq + 1, time.time_ns() // 1000)
        return _last_seq


def seq_of(timestamp: str | datetime) -> int:
    """A state's timestamp in microseconds since the epoch: the same clock as next_seq()."""
    ts = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    delta = ts - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
