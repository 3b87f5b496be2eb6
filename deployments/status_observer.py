"""The status observer: mirror the Prefect server's flow-run state events into processing_status.

Hooks run inside the flow-run process, so they cannot report a run whose machine died
(the worker then only proposes Crashed on the server). The server emits an event for every
accepted state change (`prefect.flow-run.<StateName>`, the event id is the state id, labels
carry the state type, message and timestamp); this long-running process subscribes to them
and writes each transition through the same SQL rule as the hooks, ordered by the state
timestamp. Hooks stay the fast path for progress; this is the source of truth for states.

An event is not trusted on its own: a terminal state is written only once the Prefect API confirms
it is the run's state (its time then comes from the API), a timestamp too far ahead of this clock
is refused by the store, and every write carries the run's attempt, so only the session's current
run moves its row. Events missed while the observer was down are caught up on each (re)subscription
by reconciling every open row against Prefect.

Run: `python -m deployments.status_observer` or `vibeinsight status-observer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from tenacity import AsyncRetrying, RetryError, stop_after_attempt, stop_never, wait_exponential

from blocks import registry
from blocks.status_store import StatusStore
from vibeinsight import logs, tracing
from vibeinsight.fanout import PART_FLOW
from vibeinsight.params import row_ids
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.settings import get_settings
from vibeinsight.status_rule import STATE_STATUS, attempt_of, seq_of, update_for_state

log = logging.getLogger("vibeinsight.status_observer")

EVENT_PREFIX = "prefect.flow-run."


def _related_name(event: Any, role: str) -> str | None:
    for res in event.related:
        if res.get("prefect.resource.role") == role:
            return res.get("prefect.resource.name")
    return None


class RunSession(NamedTuple):
    session_id: str
    user_id: str | None
    language: str | None = None  # the run's `language` parameter: the row's sentence is in it
    attempt: int | None = None  # the session's run request this run is (its idempotency key)


class StatusObserver:
    """Consumes flow-run events; de-duplicates by event id; writes with retries."""

    def __init__(self, store: StatusStore | None = None, terminal_grace_s: float | None = None,
                 write_retries: int = 8, backoff_s: float = 0.5, seen_max: int = 10_000,
                 read_state: Callable[[str], Awaitable[tuple[str, datetime] | None]] | None = None,
                 catch_up: bool = True) -> None:
        settings = get_settings()
        self.store = store or registry.status_store(settings)
        # The flow's own completion/failure hooks carry the richer record (the reason code of the
        # error); they run right after the state is set, so give them a moment before the
        # observer writes the same terminal state. Crashes and cancellations are written at once.
        self.grace = settings.status.terminal_grace_s if terminal_grace_s is None else terminal_grace_s
        self.write_retries, self.backoff_s = write_retries, backoff_s
        self._seen: OrderedDict[UUID, None] = OrderedDict()
        self._seen_max = seen_max
        self._runs: OrderedDict[str, RunSession | None] = OrderedDict()
        self._pending: set[asyncio.Task] = set()
        # (state type, timestamp) of a flow run as the Prefect API has it: confirms a terminal event
        self.read_state = read_state or _api_state
        self.catch_up = catch_up
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

    async def _session_of(self, flow_run_id: str) -> RunSession | None:
        """The session, its user and the run's language from the flow run's parameters; None for flows
        without a session."""
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
        found = None
        if params.get("session_id"):
            sid, uid = row_ids(params, flow_run_id)
            found = RunSession(sid, uid, params.get("language"), attempt_of(run.idempotency_key, sid))
        self._runs[flow_run_id] = found
        if len(self._runs) > 5_000:
            self._runs.popitem(last=False)
        return found

    async def handle(self, event: Any) -> None:
        if not event.event.startswith(EVENT_PREFIX) or not self._first_time(event.id):
            return
        self.last_occurred = max(self.last_occurred or event.occurred, event.occurred)
        labels = event.resource
        if _related_name(event, "flow") == PART_FLOW:  # a fanned-out part: its parent alone writes the row
            self.skipped += 1
            return
        flow_run_id = labels.id.removeprefix("prefect.flow-run.")
        state_type = labels.get("prefect.state-type", "")
        session = await self._session_of(flow_run_id) if state_type else None
        stamp = labels.get("prefect.state-timestamp") or event.occurred
        # the row's sentence in the language the run was asked for, as the flow's own hooks write it
        update = session and update_for_state(state_type, session_id=session.session_id, flow_run_id=flow_run_id,
                                              user_id=session.user_id, seq=seq_of(stamp),
                                              message=labels.get("prefect.state-message"), language=session.language,
                                              attempt=session.attempt)
        if not update:  # a state the row does not show, or a flow without a session
            self.skipped += 1
            return
        deployment = _related_name(event, "deployment")
        if update.status in (Status.COMPLETED, Status.FAILED) and self.grace > 0:
            task = asyncio.create_task(self._write_later(update, deployment))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        else:
            await self._write(update, deployment)

    async def _write_later(self, update: StatusUpdate, deployment: str | None) -> None:
        await asyncio.sleep(self.grace)
        await self._write(update, deployment)

    async def _write(self, update: StatusUpdate, deployment: str | None) -> None:
        # One observer serves every session: each write's lines and span carry its own session.
        with logs.bind(session_id=update.session_id, flow_run_id=update.flow_run_id), \
                tracing.span("status.write", update.session_id, status=update.status.value, source="observer"):
            await self._write_retried(update, deployment)

    async def _confirmed(self, update: StatusUpdate) -> StatusUpdate | None:
        """A terminal update as the Prefect API confirms it (its time from the API), or None when the
        run's state there is another one (a forged or outdated event; the newer state's event follows)."""
        try:
            found = await AsyncRetrying(stop=stop_after_attempt(self.write_retries + 1), reraise=True,
                                        wait=wait_exponential(multiplier=self.backoff_s, max=30.0))(
                self.read_state, update.flow_run_id)
        except Exception as exc:  # noqa: BLE001 - the API stays down: reconcile-status writes it later
            log.warning("cannot confirm %s of run %s (%s); not written", update.status.value, update.flow_run_id, exc)
            return None
        if found is None or STATE_STATUS.get(found[0]) is not update.status:
            log.warning("event says %s for run %s, the Prefect API says %s: not written", update.status.value,
                        update.flow_run_id, found and found[0])
            return None
        return update.model_copy(update={"seq": seq_of(found[1])})

    async def _write_retried(self, update: StatusUpdate, deployment: str | None) -> None:
        if update.status.terminal and (update := await self._confirmed(update)) is None:
            self.skipped += 1
            return
        retrying = AsyncRetrying(stop=stop_after_attempt(self.write_retries + 1),
                                 wait=wait_exponential(multiplier=self.backoff_s, max=30.0),
                                 before_sleep=lambda rs: log.warning(  # the store is down: back off and retry
                                     "status write for %s failed (%s); retry %d", update.session_id,
                                     rs.outcome.exception(), rs.attempt_number))
        try:
            changed = await retrying(asyncio.to_thread, self.store.apply, update, deployment)
        except Exception:  # noqa: BLE001
            log.error("giving up on status write for %s %s; reconcile-status will repair it",
                      update.session_id, update.status.value)
            return
        self.writes += 1
        log.info("%s %s seq=%d %s", update.session_id, update.status.value, update.seq,
                 "applied" if changed else "ignored (older or terminal)")

    async def _catch_up(self) -> None:
        from flows.reconcile_status import reconcile_once

        try:
            repaired = await reconcile_once(min_age_s=0, store=self.store)
        except Exception as exc:  # noqa: BLE001 - the scheduled reconcile-status does it later
            log.warning("catch-up on open rows failed: %s", exc)
            return
        log.info("caught up on %d open row(s) after subscribing", len(repaired))

    async def drain(self) -> None:
        """Wait for delayed terminal writes (tests and shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- the loop --

    async def run(self, stop: asyncio.Event | None = None, max_restarts: int | None = None) -> None:
        """Subscribe and handle events until stopped; resubscribe with back-off when the subscription is lost."""
        stop = stop or asyncio.Event()
        retrying = AsyncRetrying(stop=stop_never if max_restarts is None else stop_after_attempt(max_restarts + 1),
                                 wait=wait_exponential(multiplier=2, max=30.0), reraise=False,
                                 before_sleep=lambda rs: log.warning("event subscription lost (%s)",
                                                                     rs.outcome.exception()))
        try:
            await retrying(self._subscribe_until, stop)
        except RetryError:
            pass
        await self.drain()

    async def _subscribe_until(self, stop: asyncio.Event) -> None:
        """One subscription: handle events until `stop`; raise when the subscription ends otherwise."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(prefix=[EVENT_PREFIX],
                                                         exclude_prefix=["prefect.flow-run.heartbeat"]))
        async with get_events_subscriber(filter=event_filter, reconnection_attempts=10,
                                         reconnect_on_clean_close=True) as subscriber:
            if self.last_occurred is not None:
                # Replay what happened while we were away; ids already seen are skipped.
                subscriber._backfill_since = self.last_occurred - timedelta(minutes=1)
            log.info("status observer subscribed")
            if self.catch_up:  # what happened while nobody listened: every open row against Prefect
                task = asyncio.create_task(self._catch_up())
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            iterator = subscriber.__aiter__()
            while not stop.is_set():
                nxt = asyncio.ensure_future(iterator.__anext__())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if nxt not in done:
                    nxt.cancel()
                    return
                try:
                    event = nxt.result()
                except StopAsyncIteration as exc:
                    raise ConnectionError("the event stream ended") from exc
                await self.handle(event)


async def _api_state(flow_run_id: str) -> tuple[str, datetime] | None:
    """The run's current state type and timestamp from the Prefect API (None: no state)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
    return (run.state.type.value, run.state.timestamp) if run.state else None


def main() -> None:
    import signal

    logs.configure(get_settings().log_level)  # LOG_FORMAT / LOG_LEVEL, as every process of ours
    tracing.setup()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await StatusObserver().run(stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
