"""reconcile-status: repair rows left PENDING/RUNNING whose flow run ended (or vanished) in Prefect.

The safety net behind the hooks and the observer: when a flow-run process dies hard and the
observer was down too, the row would otherwise stay RUNNING forever. Scheduled every few
minutes by the deployments.

When the engine AND its supervisor die (a lost machine, an OOM kill of the container), nobody
proposes Crashed: Prefect keeps the run RUNNING. A running flow engine emits a
`prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (default
180); a run with no heartbeat and no state change for `stale_after_s` (default three beats) is
declared Crashed in Prefect itself (so the server, the UI and the observer agree) and in the row.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

from prefect import flow, get_run_logger

from blocks import registry
from vibeinsight.schemas import Status
from vibeinsight.settings import get_settings
from vibeinsight.status_rule import STATE_STATUS, next_seq, seq_of, update_for_state


async def _last_sign_of_life(client, flow_run) -> datetime:
    """The newer of the run's state timestamp and its last heartbeat event."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    seen = flow_run.state.timestamp
    page = await client.read_events(filter=EventFilter(
        occurred=EventOccurredFilter(since=seen, until=datetime.now(timezone.utc) + timedelta(minutes=5)),
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run.id}"])), limit=1)
    if page.events:
        seen = max(seen, page.events[0].occurred)
    return seen if seen.tzinfo else seen.replace(tzinfo=timezone.utc)


async def _declare_crashed(client, flow_run, silent_s: float):
    """Set Crashed in Prefect (forced: nobody else will) and return the accepted state."""
    from prefect.states import Crashed

    message = f"no heartbeat for {silent_s:.0f} s: engine and supervisor gone (reconcile-status)"
    result = await client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
    return result.state or Crashed(message=message)


async def reconcile_once(min_age_s: float | None = None, limit: int = 500,
                         stale_after_s: float | None = None) -> list[dict]:
    """Check each open row against Prefect; write the true state. Returns what was repaired."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    settings = get_settings()
    min_age_s = settings.status.reconcile_min_age_s if min_age_s is None else min_age_s
    if stale_after_s is None:
        stale_after_s = 3 * (get_current_settings().flows.heartbeat_frequency or 180)
    store = registry.status_store(settings)
    now = datetime.now(timezone.utc)
    repaired: list[dict] = []
    async with get_client() as client:
        for row in store.open_rows(limit=limit):
            updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=timezone.utc)
            if (now - updated).total_seconds() < min_age_s:
                continue  # a run that has only just started may not be visible yet
            if not row.flow_run_id:
                continue
            try:
                run = await client.read_flow_run(UUID(row.flow_run_id))
            except (ObjectNotFound, ValueError):
                declared = False
                update = update_for_state("CRASHED", session_id=row.session_id, flow_run_id=row.flow_run_id,
                                          user_id=row.user_id, seq=next_seq(), message="flow run missing in Prefect")
            else:
                state = run.state
                status = STATE_STATUS.get(state.type.value) if state else None
                declared = False
                if status is Status.RUNNING:
                    silent_s = (now - await _last_sign_of_life(client, run)).total_seconds()
                    if silent_s < stale_after_s:
                        continue
                    state = await _declare_crashed(client, run, silent_s)
                    status, declared = Status.CRASHED, True
                if status is None or not status.terminal:
                    continue
                update = update_for_state(state.type.value, session_id=row.session_id, flow_run_id=row.flow_run_id,
                                          user_id=row.user_id, seq=max(seq_of(state.timestamp), row.seq + 1),
                                          message=state.message)
            # The observer may write the Crashed we just declared before we do: still our repair.
            if store.apply(update) or declared:
                repaired.append({"session_id": row.session_id, "flow_run_id": row.flow_run_id,
                                 "from": row.status.value, "to": update.status.value})
    return repaired


@flow(name="reconcile-status", log_prints=False)
async def reconcile_status(min_age_s: float | None = None, limit: int = 500,
                           stale_after_s: float | None = None) -> list[dict]:
    repaired = await reconcile_once(min_age_s, limit, stale_after_s)
    logger = get_run_logger()
    for r in repaired:
        logger.info("session %s (run %s): %s -> %s", r["session_id"], r["flow_run_id"], r["from"], r["to"])
    logger.info("reconciled %d row(s)", len(repaired))
    return repaired
