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
from vibeinsight.schemas import Status, StatusUpdate

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


def update_for_state(state_type: str, *, session_id: str, flow_run_id: str | None, user_id: str | None,
                     seq: int, message: str | None = None, error: BaseException | None = None,
                     language: str | None = None) -> StatusUpdate | None:
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
                        **fields)


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
