"""The status observer: mirror the Prefect server's flow-run state events into processing_status.

Hooks run inside the flow-run process, so they cannot report a run whose machine died
(the worker then only proposes Crashed on the server). The server emits an event for every
accepted state change (`prefect.flow-run.<StateName>`, the event id is the state id, labels
carry the state type, message and timestamp); this long-running process subscribes to them
and writes each transition through the same SQL rule as the hooks, ordered by the state
timestamp. Hooks stay the fast path for progress; this is the source of truth for states.

Run: `python -m flows.status_observer` or `vibeinsight status-observer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from blocks import registry
from blocks.status_store import StatusStore
from flows.status import result_key
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.settings import get_settings

log = logging.getLogger("vibeinsight.status_observer")

EVENT_PREFIX = "prefect.flow-run."
# Prefect state types → our statuses. SCHEDULED is still waiting (PENDING); CANCELLING and
# PAUSED are passing states the row does not show.
STATE_MAP = {
    "SCHEDULED": Status.PENDING, "PENDING": Status.PENDING, "RUNNING": Status.RUNNING,
    "COMPLETED": Status.COMPLETED, "FAILED": Status.FAILED, "CRASHED": Status.CRASHED,
    "CANCELLED": Status.CANCELLED,
}


def seq_of(timestamp: str | datetime) -> int:
    """The state's timestamp in microseconds since the epoch: the same clock as next_seq()."""
    ts = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    delta = ts - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def update_for_state(status: Status, seq: int, session_id: str, flow_run_id: str, user_id: str | None,
                     message: str | None) -> StatusUpdate:
    """The row update a server-side state implies (shared by the observer and reconcile-status)."""
    fields: dict[str, Any] = {}
    message = (message or "")[:500] or None
    if status is Status.COMPLETED:
        fields = dict(stage="done", progress=100, result_key=result_key(session_id))
    elif status is Status.FAILED:
        fields = dict(error_code="failed", error_message=message or "failed", result_key=result_key(session_id))
    elif status is Status.CRASHED:
        fields = dict(error_code="crashed", error_message=message or "crashed")
    elif status is Status.CANCELLED:
        fields = dict(error_code="cancelled", error_message=message or "cancelled")
    elif status is Status.RUNNING:
        fields = dict(stage="ingest")
    return StatusUpdate(session_id=session_id, status=status, seq=seq, flow_run_id=flow_run_id,
                        user_id=user_id, **fields)


def _related_name(event: Any, role: str) -> str | None:
    for res in event.related:
        if res.get("prefect.resource.role") == role:
            return res.get("prefect.resource.name")
    return None


class StatusObserver:
    """Consumes flow-run events; de-duplicates by event id; writes with retries."""

    def __init__(self, store: StatusStore | None = None, terminal_grace_s: float | None = None,
                 write_retries: int = 8, backoff_s: float = 0.5, seen_max: int = 10_000) -> None:
        settings = get_settings()
        self.store = store or registry.status_store(settings)
        # The flow's own completion/failure hooks carry the richer record (the reason code of the
        # error); they run right after the state is set, so give them a moment before the
        # observer writes the same terminal state. Crashes and cancellations are written at once.
        self.grace = settings.status_terminal_grace_s if terminal_grace_s is None else terminal_grace_s
        self.write_retries, self.backoff_s = write_retries, backoff_s
        self._seen: OrderedDict[UUID, None] = OrderedDict()
        self._seen_max = seen_max
        self._runs: OrderedDict[str, tuple[str, str | None] | None] = OrderedDict()
        self._pending: set[asyncio.Task] = set()
        self.last_occurred: datetime | None = None
        self.writes = 0
        self.skipped = 0

    # -- event handling --

    def _first_time(self, event_id: UUID) -> bool:
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        return True

    async def _session_of(self, flow_run_id: str) -> tuple[str, str | None] | None:
        """(session_id, user_id) from the flow run's parameters; None for flows without a session."""
        if flow_run_id in self._runs:
            return self._runs[flow_run_id]
        from prefect.client.orchestration import get_client

        try:
            async with get_client() as client:
                run = await client.read_flow_run(UUID(flow_run_id))
        except Exception as exc:  # noqa: BLE001 - a deleted run, or the API briefly down
            log.warning("cannot read flow run %s: %s", flow_run_id, exc)
            return None
        params = run.parameters or {}
        found = (str(params["session_id"]), params.get("user_id")) if params.get("session_id") else None
        self._runs[flow_run_id] = found
        if len(self._runs) > 5_000:
            self._runs.popitem(last=False)
        return found

    async def handle(self, event: Any) -> None:
        if not event.event.startswith(EVENT_PREFIX) or not self._first_time(event.id):
            return
        self.last_occurred = max(self.last_occurred or event.occurred, event.occurred)
        labels = event.resource
        status = STATE_MAP.get(labels.get("prefect.state-type", ""))
        if status is None:
            self.skipped += 1
            return
        flow_run_id = labels.id.removeprefix("prefect.flow-run.")
        session = await self._session_of(flow_run_id)
        if session is None:
            self.skipped += 1
            return
        stamp = labels.get("prefect.state-timestamp") or event.occurred
        update = update_for_state(status, seq_of(stamp), session[0], flow_run_id, session[1],
                                  labels.get("prefect.state-message"))
        deployment = _related_name(event, "deployment")
        if status in (Status.COMPLETED, Status.FAILED) and self.grace > 0:
            task = asyncio.create_task(self._write_later(update, deployment))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        else:
            await self._write(update, deployment)

    async def _write_later(self, update: StatusUpdate, deployment: str | None) -> None:
        await asyncio.sleep(self.grace)
        await self._write(update, deployment)

    async def _write(self, update: StatusUpdate, deployment: str | None) -> None:
        for attempt in range(self.write_retries + 1):
            try:
                changed = await asyncio.to_thread(self.store.apply, update, deployment)
            except Exception as exc:  # noqa: BLE001 - the store is down: back off and retry
                log.warning("status write for %s failed (%s); retry %d", update.session_id, exc, attempt + 1)
                await asyncio.sleep(min(30.0, self.backoff_s * 2**attempt))
                continue
            self.writes += 1
            log.info("%s %s seq=%d %s", update.session_id, update.status.value, update.seq,
                     "applied" if changed else "ignored (older or terminal)")
            return
        log.error("giving up on status write for %s %s; reconcile-status will repair it",
                  update.session_id, update.status.value)

    async def drain(self) -> None:
        """Wait for delayed terminal writes (tests and shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- the loop --

    async def run(self, stop: asyncio.Event | None = None, max_restarts: int | None = None) -> None:
        """Subscribe and handle events until stopped; restart the subscription when it gives up."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        stop = stop or asyncio.Event()
        restarts = 0
        while not stop.is_set():
            try:
                event_filter = EventFilter(event=EventNameFilter(prefix=[EVENT_PREFIX],
                                                                 exclude_prefix=["prefect.flow-run.heartbeat"]))
                async with get_events_subscriber(filter=event_filter, reconnection_attempts=10,
                                                 reconnect_on_clean_close=True) as subscriber:
                    if self.last_occurred is not None:
                        # Replay what happened while we were away; ids already seen are skipped.
                        subscriber._backfill_since = self.last_occurred - timedelta(minutes=1)
                    restarts = 0
                    log.info("status observer subscribed")
                    iterator = subscriber.__aiter__()
                    while not stop.is_set():
                        nxt = asyncio.ensure_future(iterator.__anext__())
                        stopper = asyncio.ensure_future(stop.wait())
                        done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                        stopper.cancel()
                        if nxt not in done:
                            nxt.cancel()
                            break
                        await self.handle(nxt.result())
            except (StopAsyncIteration, asyncio.CancelledError):
                if stop.is_set():
                    break
            except Exception as exc:  # noqa: BLE001 - server restarting, network
                log.warning("event subscription lost (%s)", exc)
            if stop.is_set() or (max_restarts is not None and restarts >= max_restarts):
                break
            restarts += 1
            await asyncio.sleep(min(30.0, 2**restarts))
        await self.drain()


def main() -> None:
    import signal

    logging.basicConfig(level=get_settings().log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await StatusObserver().run(stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
