"""Issue 20, point 6: reconcile-status runs a crashed process-audio run again once, the same flow run
(so its session, row and idempotency key still match), and a second crash ends it for good, CRASHED
with its code. Against Prefect's own API server (in-process harness) and a SQLite status store."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from blocks.status_store import SQLiteStatusStore
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.status_rule import next_seq

pytestmark = [pytest.mark.integration,
              pytest.mark.shares_clock("its runs meet the Prefect server's clock, which defers a run scheduled ahead of it")]


@pytest.fixture()
def store(home, prefect_harness):
    return SQLiteStatusStore(path=str(home / "status.db"))


async def _new_run(sid: str, user: str) -> str:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    @flow(name="process-audio")  # reconcile looks for crashed runs of this flow by its name
    def stand_in(session_id: str, user_id: str):
        return None

    async with get_client() as client:
        run = await client.create_flow_run(stand_in, parameters={"session_id": sid, "user_id": user},
                                           state=Scheduled())
    return str(run.id)


async def _start(run_id: str) -> None:
    """What a worker and the flow engine do: Pending, then Running (Prefect counts the run: run_count)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    async with get_client() as client:
        for state in (Pending(), Running()):
            result = await client.set_flow_run_state(uuid.UUID(run_id), state)
            assert result.status.value == "ACCEPT", result


async def _crash(run_id: str) -> None:
    """What a process worker proposes when the run's process dies under it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    async with get_client() as client:
        await client.set_flow_run_state(uuid.UUID(run_id), Crashed(message="process exited with -9"), force=True)


async def _run(run_id: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(uuid.UUID(run_id))


def _reconcile(store):
    from flows.reconcile_status import reconcile_once

    # stale_after_s=0: a RUNNING run is as silent as a lost Machine's at once (no heartbeat since its start)
    return asyncio.run(reconcile_once(min_age_s=0, stale_after_s=0, pending_after_s=600, store=store))


def test_a_silent_run_is_run_again_once_and_a_second_crash_ends_it(store):
    sid, user = str(uuid.uuid4()), str(uuid.uuid4())
    run_id = asyncio.run(_new_run(sid, user))
    asyncio.run(_start(run_id))
    store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.RUNNING, seq=next_seq(), flow_run_id=run_id,
                             stage="transcribe", progress=40))

    # its Machine died: no heartbeat, so reconcile declares it Crashed, and schedules the same run again
    assert _reconcile(store) == [{"session_id": sid, "flow_run_id": run_id, "from": "RUNNING", "to": "RERUN"}]
    run = asyncio.run(_run(run_id))
    assert (run.state.type.value, run.run_count) == ("SCHEDULED", 1)
    assert "auto-rerun" in run.tags
    row = store.get(sid)
    assert (row.status, row.flow_run_id, row.error_code) == (Status.PENDING, run_id, None)

    # a worker takes it again: the row follows the same run; then it dies a second time
    asyncio.run(_start(run_id))
    assert asyncio.run(_run(run_id)).run_count == 2
    store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.RUNNING, seq=next_seq(), flow_run_id=run_id,
                             stage="ingest", progress=0))
    assert _reconcile(store) == [{"session_id": sid, "flow_run_id": run_id, "from": "RUNNING", "to": "CRASHED"}]
    assert asyncio.run(_run(run_id)).state.type.value == "CRASHED"
    row = store.get(sid)
    assert (row.status, row.error_code) == (Status.CRASHED, "crashed")
    assert _reconcile(store) == []  # for good: no further re-run
    assert asyncio.run(_run(run_id)).state.type.value == "CRASHED"


def test_a_run_its_worker_crashed_is_run_again_when_the_row_already_shows_it(store):
    sid, user = str(uuid.uuid4()), str(uuid.uuid4())
    run_id = asyncio.run(_new_run(sid, user))
    asyncio.run(_start(run_id))
    asyncio.run(_crash(run_id))
    # the observer (or the hook) mirrored the crash: the row is CRASHED, so no longer an open row
    store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.CRASHED, seq=next_seq(), flow_run_id=run_id,
                             error_code="crashed", error_message="x"))
    # another session's crashed run that its row no longer names (a re-run replaced it) is left alone
    other, other_user = str(uuid.uuid4()), str(uuid.uuid4())
    old_run = asyncio.run(_new_run(other, other_user))
    asyncio.run(_start(old_run))
    asyncio.run(_crash(old_run))
    store.apply(StatusUpdate(session_id=other, user_id=other_user, status=Status.CRASHED, seq=next_seq(),
                             flow_run_id=str(uuid.uuid4()), error_code="crashed", error_message="x"))

    assert _reconcile(store) == [{"session_id": sid, "flow_run_id": run_id, "from": "CRASHED", "to": "RERUN"}]
    assert asyncio.run(_run(run_id)).state.type.value == "SCHEDULED"
    assert store.get(sid).status is Status.PENDING
    assert asyncio.run(_run(old_run)).state.type.value == "CRASHED"
    assert store.get(other).status is Status.CRASHED

    # its second crash, mirrored the same way, is final
    asyncio.run(_start(run_id))
    asyncio.run(_crash(run_id))
    store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.CRASHED, seq=next_seq(), flow_run_id=run_id,
                             error_code="crashed", error_message="x"))
    assert _reconcile(store) == []
    assert asyncio.run(_run(run_id)).state.type.value == "CRASHED"
    assert (store.get(sid).status, store.get(sid).error_code) == (Status.CRASHED, "crashed")
