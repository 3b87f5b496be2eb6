"""reconcile-status: repair rows left PENDING/RUNNING whose flow run ended (or vanished) in Prefect,
whose run a dead worker left Pending, or for which no run was ever created.

The safety net behind the hooks and the observer: when a flow-run process dies hard and the
observer was down too, the row would otherwise stay RUNNING forever. Scheduled every few
minutes by the deployments.

When the engine AND its supervisor die (a lost machine, an OOM kill of the container), nobody
proposes Crashed: Prefect keeps the run RUNNING. A running flow engine emits a
`prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (default
180); a run with no heartbeat and no state change for `stale_after_s` (default three beats) is
declared Crashed in Prefect itself (so the server, the UI and the observer agree) and in the row.

Only the row's current run counts: a PENDING row that names no run yet (a re-run, or a first run
whose id never reached the row) is looked up in Prefect by the run's idempotency key, and every
write carries the row's attempt, so a state of an older run never moves it. A run merely waiting
in the queue leaves the row PENDING, however long; only a session with no run at all is failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

from prefect import flow, get_run_logger

from blocks import registry
from vibeinsight.errors import user_message
from vibeinsight.params import canonical_uuid
from vibeinsight.schemas import Status, StatusRow, StatusUpdate
from vibeinsight.settings import get_settings
from vibeinsight.status_rule import STATE_STATUS, idempotency_key, next_seq, seq_of, update_for_state


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


async def _reschedule(client, flow_run) -> None:
    """Put a run its worker left Pending back to Scheduled, so a live worker takes it and runs it."""
    from prefect.states import Scheduled

    await client.set_flow_run_state(flow_run.id, Scheduled(message="its worker is gone: scheduled again "
                                                                   "(reconcile-status)"), force=True)


def _age_s(row: StatusRow, now: datetime) -> float:
    updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=timezone.utc)
    return (now - updated).total_seconds()


def _key_of(row: StatusRow) -> str:
    return idempotency_key(row.session_id, row.attempt or 0)


async def _runs_by_key(client, rows: list[StatusRow]) -> dict[str, object]:
    """The flow runs of these rows' current attempts, by idempotency key (a row with none: no run at all);
    one API call per hundred rows."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    owners = {_key_of(r): (r.session_id, r.user_id) for r in rows}
    found: dict[str, object] = {}
    keys = list(owners)
    for i in range(0, len(keys), 100):
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            idempotency_key=FlowRunFilterIdempotencyKey(any_=keys[i:i + 100])), limit=200)
        for run in runs:
            params = run.parameters or {}
            # the key is unique per flow only: the run must also be for this session and its owner
            if owners.get(run.idempotency_key) == (canonical_uuid(params.get("session_id")),
                                                   canonical_uuid(params.get("user_id"))):
                found[run.idempotency_key] = run
    return found


async def _repair(client, store, row: StatusRow, now: datetime, stale_after_s: float, pending_after_s: float,
                  orphan_after_s: float, run=None) -> dict | None:
    """Bring one open row in line with its current flow run; what was done, or None when nothing was to do.
    A row that names no run comes with the run found by its idempotency key (`run`; None: no run at all)."""
    from prefect.exceptions import ObjectNotFound

    if not row.flow_run_id:
        if run is None:
            # The Edge Function wrote the row, then creating the run failed: nothing will ever run it.
            if _age_s(row, now) < orphan_after_s:
                return None
            update = StatusUpdate(session_id=row.session_id, user_id=row.user_id, status=Status.FAILED,
                                  seq=max(next_seq(), row.seq + 1), error_code="stale_pending",
                                  error_message=user_message("stale_pending"), attempt=row.attempt)
            return _done(row, update, store.apply(update))
        row = row.model_copy(update={"flow_run_id": str(run.id)})  # the current run, whose id had not reached the row
    declared = False
    try:
        run = run or await client.read_flow_run(UUID(row.flow_run_id))
    except (ObjectNotFound, ValueError):
        update = update_for_state("CRASHED", session_id=row.session_id, flow_run_id=row.flow_run_id,
                                  user_id=row.user_id, seq=next_seq(), message="flow run missing in Prefect",
                                  attempt=row.attempt)
    else:
        state = run.state
        status = STATE_STATUS.get(state.type.value) if state else None
        if state is not None and state.type.value == "PENDING":
            # A worker took the run (Pending, Submitting) and died before its process started it.
            if (now - _aware(state.timestamp)).total_seconds() < pending_after_s:
                return None
            await _reschedule(client, run)
            return {"session_id": row.session_id, "flow_run_id": row.flow_run_id, "from": row.status.value,
                    "to": "SCHEDULED"}  # the run's new state; the row stays PENDING until it runs
        if status is Status.RUNNING:
            silent_s = (now - await _last_sign_of_life(client, run)).total_seconds()
            if silent_s < stale_after_s:
                if row.status is Status.RUNNING:
                    return None
                # the row missed the run's start (the observer was down, the hook's write lost): catch up
                update = update_for_state("RUNNING", session_id=row.session_id, flow_run_id=row.flow_run_id,
                                          user_id=row.user_id, seq=max(seq_of(state.timestamp), row.seq + 1),
                                          attempt=row.attempt)
                return _done(row, update, store.apply(update))
            state = await _declare_crashed(client, run, silent_s)
            status, declared = Status.CRASHED, True
        if status is None or not status.terminal:
            return None
        update = update_for_state(state.type.value, session_id=row.session_id, flow_run_id=row.flow_run_id,
                                  user_id=row.user_id, seq=max(seq_of(state.timestamp), row.seq + 1),
                                  message=state.message, language=(run.parameters or {}).get("language"),
                                  attempt=row.attempt)
    # The observer may write the Crashed we just declared before we do: still our repair.
    return _done(row, update, store.apply(update) or declared)


OPEN = {"SCHEDULED", Status.PENDING.value, Status.RUNNING.value}  # a repair that leaves the row open


def _done(row: StatusRow, update: StatusUpdate, changed: bool) -> dict | None:
    if not changed:
        return None
    return {"session_id": row.session_id, "flow_run_id": row.flow_run_id, "from": row.status.value,
            "to": update.status.value}


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


async def reconcile_once(min_age_s: float | None = None, limit: int = 500, stale_after_s: float | None = None,
                         pending_after_s: float | None = None, orphan_after_s: float | None = None,
                         store=None) -> list[dict]:
    """Check open rows against Prefect and act: write the true state of ended runs, declare silent
    RUNNING runs Crashed, schedule again runs a dead worker left Pending, fail rows no run was ever
    created for. Returns what was done.

    `limit` counts the rows it could act on (with a flow run, or old enough to fail): rows updated within
    `min_age_s` are not read at all, and rows with no run yet that are still young are passed over, so a
    pile of either never stops the repair of the others. `store`: the status store (default: the configured one).
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    settings = get_settings().status
    min_age_s = settings.reconcile_min_age_s if min_age_s is None else min_age_s
    pending_after_s = settings.reconcile_pending_after_s if pending_after_s is None else pending_after_s
    orphan_after_s = settings.reconcile_orphan_after_s if orphan_after_s is None else orphan_after_s
    if stale_after_s is None:
        stale_after_s = 3 * (get_current_settings().flows.heartbeat_frequency or 180)
    store = store or registry.status_store()
    now = datetime.now(timezone.utc)
    before = now - timedelta(seconds=min_age_s)  # a run that has only just started may not be visible yet
    done: list[dict] = []
    acted, offset = 0, 0
    async with get_client() as client:
        while acted < limit:
            page = store.open_rows(limit=limit, before=before, offset=offset)
            if not page:
                break
            left_open = 0
            # rows that name no run yet: asked of Prefect by their runs' idempotency keys before anything is written
            by_key = await _runs_by_key(client, [r for r in page if not r.flow_run_id])
            for row in page:
                if acted >= limit:
                    break
                run = None if row.flow_run_id else by_key.get(_key_of(row))
                if not row.flow_run_id and run is None and _age_s(row, now) < orphan_after_s:
                    left_open += 1
                    continue  # no run yet, and still young: not actionable, does not count
                acted += 1
                result = await _repair(client, store, row, now, stale_after_s, pending_after_s, orphan_after_s, run)
                if result:
                    done.append(result)
                if not result or result["to"] in OPEN:
                    left_open += 1  # still an open row: the next page starts after it
            offset += left_open
            if len(page) < limit:
                break
    return done


@flow(name="reconcile-status", log_prints=False)
async def reconcile_status(min_age_s: float | None = None, limit: int = 500, stale_after_s: float | None = None,
                           pending_after_s: float | None = None, orphan_after_s: float | None = None) -> list[dict]:
    repaired = await reconcile_once(min_age_s, limit, stale_after_s, pending_after_s, orphan_after_s)
    logger = get_run_logger()
    for r in repaired:
        logger.info("session %s (run %s): %s -> %s", r["session_id"], r["flow_run_id"], r["from"], r["to"])
    logger.info("reconciled %d row(s)", len(repaired))
    return repaired
