"""Status rows under faults, on real parts: the retry rule in SQLite and in PostgreSQL (the
migrations' function), and reconcile-status against Prefect's own API server (in-process harness)
for rows no run was created for, runs a dead worker left Pending, and a batch full of rows it
cannot act on yet."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from blocks.status_store import PostgresStatusStore, SQLiteStatusStore
from vibeinsight.errors import user_message
from vibeinsight.schemas import Status, StatusUpdate

pytestmark = pytest.mark.integration


def _retry_rule(store) -> None:
    sid = str(uuid.uuid4())
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=10, flow_run_id="r1", progress=30))
    assert store.apply(StatusUpdate(session_id=sid, status=Status.FAILED, seq=20, flow_run_id="r1",
                                    error_code="storage_failed", error_message="x"))
    # nothing older, and nothing that names no run, moves a FAILED row
    assert not store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=15, flow_run_id="r1"))
    assert not store.apply(StatusUpdate(session_id=sid, status=Status.PENDING, seq=25))
    # a Prefect retry of the same flow run: its newer states replace FAILED …
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=30, flow_run_id="r1", progress=0))
    assert store.apply(StatusUpdate(session_id=sid, status=Status.COMPLETED, seq=40, flow_run_id="r1", progress=100))
    row = store.get(sid)
    assert (row.status, row.error_code, row.progress) == (Status.COMPLETED, None, 100)
    # … while COMPLETED stays final for its run
    assert not store.apply(StatusUpdate(session_id=sid, status=Status.FAILED, seq=50, flow_run_id="r1"))
    for terminal in (Status.CRASHED, Status.CANCELLED):
        other = str(uuid.uuid4())
        store.apply(StatusUpdate(session_id=other, status=terminal, seq=5, flow_run_id="r9"))
        assert store.apply(StatusUpdate(session_id=other, status=Status.RUNNING, seq=6, flow_run_id="r9"))


def test_a_retry_of_the_same_run_replaces_failed_in_sqlite(tmp_path):
    _retry_rule(SQLiteStatusStore(path=str(tmp_path / "status.db")))


def test_a_retry_of_the_same_run_replaces_failed_in_postgresql(pg_url):
    _retry_rule(PostgresStatusStore(url=pg_url, pg_role="service_role"))


# --- reconcile-status against a real Prefect API ---

@pytest.fixture()
def store(home, prefect_harness):
    return SQLiteStatusStore(path=str(home / "status.db"))


def _backdate(store, session_ids, minutes: float) -> None:
    when = (datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat()
    with sqlite3.connect(store.path) as conn:
        conn.executemany("UPDATE processing_status SET updated_at = ? WHERE session_id = ?",
                         [(when, s) for s in session_ids])


async def _flow_run(state):
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="reconcile-probe")
    def probe():
        return None

    async with get_client() as client:
        run = await client.create_flow_run(probe, state=state)
    return str(run.id)


async def _state_of(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(uuid.UUID(flow_run_id))).state.type.value


def test_rows_it_cannot_act_on_do_not_use_up_the_batch(store):
    from prefect.states import Completed

    from flows.reconcile_status import reconcile_once

    # 600 PENDING rows the Edge Function wrote a moment ago (no flow run yet): not actionable …
    young = [str(uuid.uuid4()) for _ in range(600)]
    for sid in young:
        store.apply(StatusUpdate(session_id=sid, status=Status.PENDING, seq=1))
    # … and, updated after all of them, a row left RUNNING whose run has completed
    run_id = asyncio.run(_flow_run(Completed()))
    sid = str(uuid.uuid4())
    store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=5, flow_run_id=run_id, progress=40))
    done = asyncio.run(reconcile_once(min_age_s=0, limit=50, orphan_after_s=300))
    assert done == [{"session_id": sid, "flow_run_id": run_id, "from": "RUNNING", "to": "COMPLETED"}]
    assert store.get(sid).status is Status.COMPLETED
    assert all(store.get(s).status is Status.PENDING for s in young[:5])


def test_a_row_no_run_was_created_for_fails_with_a_code(store):
    from flows.reconcile_status import reconcile_once

    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    for sid in (old, fresh):
        store.apply(StatusUpdate(session_id=sid, status=Status.PENDING, seq=1, user_id=str(uuid.uuid4())))
    _backdate(store, [old], minutes=10)
    done = asyncio.run(reconcile_once(min_age_s=60, orphan_after_s=300))
    assert done == [{"session_id": old, "flow_run_id": None, "from": "PENDING", "to": "FAILED"}]
    row = store.get(old)
    assert (row.status, row.error_code, row.error_message) == (Status.FAILED, "stale_pending",
                                                               user_message("stale_pending"))
    assert store.get(fresh).status is Status.PENDING


@pytest.mark.shares_clock("reconcile compares its clock with the Prefect server's run times")
def test_a_run_a_dead_worker_left_pending_is_scheduled_again(store):
    from prefect.states import Pending

    from flows.reconcile_status import reconcile_once

    run_id = asyncio.run(_flow_run(Pending(name="Submitting")))
    sid = str(uuid.uuid4())
    store.apply(StatusUpdate(session_id=sid, status=Status.PENDING, seq=1, flow_run_id=run_id))
    assert asyncio.run(reconcile_once(min_age_s=0, pending_after_s=600)) == []  # a worker may still start it
    assert asyncio.run(_state_of(run_id)) == "PENDING"
    done = asyncio.run(reconcile_once(min_age_s=0, pending_after_s=0))
    assert done == [{"session_id": sid, "flow_run_id": run_id, "from": "PENDING", "to": "SCHEDULED"}]
    assert asyncio.run(_state_of(run_id)) == "SCHEDULED"  # a live worker takes it from here
    assert store.get(sid).status is Status.PENDING
