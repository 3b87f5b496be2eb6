"""One session, one owner, one current run (issue 20) end to end: a real Prefect server, the process-audio
flow and the status probe served (runner = supervisor, one engine process per run), the status observer,
reconcile-status, and a real PostgreSQL with every migration.

Runs are started through the Prefect API as anyone holding a Prefect key could start them."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from blocks.status_store import PostgresStatusStore
from deployments import stack as procs
from tests import media
from tests.pg import create_database, drop_database
from tests.prefect_server import ROOT, LocalPrefect, deployment_ready, local_prefect
from tests.waiting import wait_for
from vibeinsight.schemas import Status
from vibeinsight.status_rule import idempotency_key, next_seq, update_for_state

pytestmark = pytest.mark.e2e

PY = sys.executable


@dataclass
class Stack:
    prefect: LocalPrefect
    pg_url: str
    store: PostgresStatusStore
    bucket: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("current-run")
    pg_url = create_database()
    store_env = {"VIBEINSIGHT_STATUS_URL": pg_url, "VIBEINSIGHT_STATUS_PG_ROLE": "service_role"}
    writer = {"VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "0.3", "VIBEINSIGHT_STATUS_TERMINAL_GRACE_S": "1.0"}
    try:
        with local_prefect(tmp, deploy=False, env={**writer, **store_env}, here=store_env) as lp:
            lp.add_observer()
            base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIBEINSIGHT_", "SUPABASE_"))}
            env = dict(base, PREFECT_API_URL=lp.api_url, PREFECT_HOME=str(tmp / "prefect-client"),
                       PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="1",
                       PREFECT_LOGGING_LEVEL="WARNING", VIBEINSIGHT_HOME=str(lp.home), PYTHONPATH=str(ROOT),
                       **writer, **store_env)
            lp.spawn("serve-process-audio", [PY, "-c", "from flows.process_audio import process_audio; "
                     "process_audio.serve(name='owner', limit=2, print_starting_message=False)"], env)
            lp.spawn("serve-probe", [PY, "-c", "from tests.status_flows import status_probe; "
                     "status_probe.serve(name='probe', limit=4, print_starting_message=False)"], env)
            # a deployment whose status writes are all lost (its store is unreachable): only the observer's
            # catch-up can mirror its runs
            lost = dict(env, VIBEINSIGHT_STATUS_URL="postgresql://postgres@127.0.0.1:9/nowhere",
                        VIBEINSIGHT_STATUS_FINAL_WAIT_S="0.5", VIBEINSIGHT_STATUS_FINAL_GIVE_UP_S="1")
            lp.spawn("serve-mute", [PY, "-c", "from tests.status_flows import status_probe; "
                     "status_probe.serve(name='mute', limit=2, print_starting_message=False)"], lost)
            from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

            with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
                for name in ("process-audio/owner", "status-probe/probe", "status-probe/mute"):
                    wait_for(lambda n=name: deployment_ready(n), 180, 0.5, f"the served deployment {name}")
                yield Stack(prefect=lp, pg_url=pg_url, store=PostgresStatusStore(url=pg_url, pg_role="service_role"),
                            bucket=lp.home / "bucket")
    finally:
        drop_database(pg_url)



def _run(deployment: str, parameters: dict, key: str | None = None, later: bool = False) -> str:
    """A flow run created through the Prefect API; `later`: scheduled an hour ahead (it waits in the queue)."""
    from prefect.deployments import run_deployment

    when = datetime.now(timezone.utc) + timedelta(hours=1) if later else None
    return str(run_deployment(deployment, parameters=parameters, idempotency_key=key, scheduled_time=when,
                              timeout=0).id)


def _release(run_id: str) -> None:
    """A queued run's turn comes: scheduled now, the served runner takes it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    async def go():
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(run_id), Scheduled(scheduled_time=datetime.now(timezone.utc)),
                                            force=True)

    asyncio.run(go())


def _sql(stack, query: str, *args):
    with psycopg.connect(stack.pg_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        return conn.execute(query, args).fetchone()


def _user(stack) -> str:
    uid = str(uuid.uuid4())
    with psycopg.connect(stack.pg_url, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
    return uid


def _request_run(stack, sid, user, key, rerun=False) -> dict:
    return _sql(stack, "select public.request_run(%s, %s, %s, 'process-audio/owner', %s, 50, 50, %s)",
                sid, user, key, rerun, str(uuid.uuid4()))[0]


def _snapshot(stack, sid) -> str:
    return _sql(stack, "select row_to_json(p)::text from public.processing_status p where session_id = %s", sid)[0]


def _upload(stack, user: str, name: str) -> Path:
    path = stack.bucket / "uploads" / user / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return media.tone(path, 2)


def _victim(stack) -> tuple[str, str, bytes]:
    """A user's finished session (row COMPLETED by its current run, result in the bucket)."""
    victim, sid = _user(stack), str(uuid.uuid4())
    first = _upload(stack, victim, "first.wav")
    _request_run(stack, sid, victim, f"uploads/{victim}/first.wav")
    _sql(stack, "select public.set_current_run(%s, %s, 0, 'their-run')", sid, victim)
    done = update_for_state("COMPLETED", session_id=sid, flow_run_id="their-run", user_id=victim, seq=next_seq(),
                            attempt=0)
    assert stack.store.apply(done)
    result = stack.bucket / "results" / f"{sid}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(b'{"session_id": "%s", "status": "COMPLETED", "transcript": "theirs"}' % sid.encode())
    assert first.is_file()
    return victim, sid, result.read_bytes()


@pytest.mark.parametrize("as_whom", ["no user_id", "the victim's user_id and another of their uploads"])
def test_a_run_with_someone_elses_session_leaves_their_row_and_result_unchanged(stack, as_whom):
    victim, sid, result = _victim(stack)
    row_before = _snapshot(stack, sid)
    params = {"session_id": sid, "language": "en"}
    if as_whom == "no user_id":
        params["source"] = str(stack.bucket / "uploads" / victim / "first.wav")
    else:
        params.update(user_id=victim, source=str(_upload(stack, victim, "second.wav")))
    run_id = _run("process-audio/owner", params)
    run = stack.prefect.wait_run(run_id, 240)
    assert run["state"]["type"] == "FAILED"
    assert "session_conflict" in (run["state"]["message"] or ""), run["state"]
    time.sleep(3)  # past the observer's grace (1 s): its write of the run's FAILED would have landed by now
    assert _snapshot(stack, sid) == row_before
    assert (stack.bucket / "results" / f"{sid}.json").read_bytes() == result


def _observer_down(stack) -> None:
    if (observer := stack.prefect.procs.pop("observer", None)) is not None:
        procs.stop(observer)


def _statuses_until(stack, sid, done, timeout_s=120) -> list:
    """Every row state seen (polling) until `done(row)`."""
    seen = []

    def look():
        row = stack.store.get(sid)
        seen.append(row)
        return done(row)

    wait_for(look, timeout_s, 0.2, f"the row of {sid}")
    return seen


def test_a_rerun_with_the_observer_down_stays_pending_while_queued_and_never_shows_the_old_end(stack):
    from flows.reconcile_status import reconcile_once

    user, sid = _user(stack), str(uuid.uuid4())
    key = f"uploads/{user}/a.wav"
    assert _request_run(stack, sid, user, key)["outcome"] == "created"
    old = _run("status-probe/probe", {"session_id": sid, "user_id": user, "seconds": 0.3}, key=sid)
    _statuses_until(stack, sid, lambda r: r.status is Status.COMPLETED and r.flow_run_id == old)
    _observer_down(stack)  # from here on: it misses every event of the re-run
    rerun = _request_run(stack, sid, user, key, rerun=True)
    assert (rerun["outcome"], rerun["attempt"]) == ("rerun", 1)
    new = _run("status-probe/probe", {"session_id": sid, "user_id": user, "seconds": 0.3},
               key=idempotency_key(sid, 1), later=True)  # waits in the queue; its id never reached the row
    # the old run's end, written late (as the observer or reconcile would have read it), is refused
    late = update_for_state("COMPLETED", session_id=sid, flow_run_id=old, user_id=user, seq=next_seq(), attempt=0)
    assert not stack.store.apply(late)
    # reconcile, with every limit passed: asks Prefect by the re-run's key and leaves the row PENDING
    repaired = asyncio.run(reconcile_once(min_age_s=0, stale_after_s=600, pending_after_s=3600, orphan_after_s=0))
    assert sid not in {r["session_id"] for r in repaired}
    row = stack.store.get(sid)
    assert (row.status, row.flow_run_id, row.attempt) == (Status.PENDING, None, 1)
    _release(new)
    seen = _statuses_until(stack, sid, lambda r: r.status is Status.COMPLETED and r.flow_run_id == new)
    assert all(r.status in (Status.PENDING, Status.RUNNING) for r in seen[:-1])  # never the old run's end
    assert {r.flow_run_id for r in seen} <= {None, new}


def test_a_run_queued_past_the_stale_limit_is_not_failed(stack):
    from flows.reconcile_status import reconcile_once

    _observer_down(stack)  # else its write of the run's Scheduled state names the run on the row
    user = _user(stack)
    queued, never = str(uuid.uuid4()), str(uuid.uuid4())
    for sid in (queued, never):
        assert _request_run(stack, sid, user, f"uploads/{user}/{sid}.wav")["outcome"] == "created"
    _run("status-probe/probe", {"session_id": queued, "user_id": user}, key=queued, later=True)
    repaired = asyncio.run(reconcile_once(min_age_s=0, stale_after_s=600, pending_after_s=3600, orphan_after_s=0))
    assert {"session_id": never, "flow_run_id": None, "from": "PENDING", "to": "FAILED"} in repaired
    assert queued not in {r["session_id"] for r in repaired}
    assert stack.store.get(queued).status is Status.PENDING
    never_row = stack.store.get(never)
    assert (never_row.status, never_row.error_code) == (Status.FAILED, "stale_pending")


def test_the_observer_catches_up_on_what_it_missed_when_it_starts(stack):
    from deployments.status_observer import StatusObserver

    _observer_down(stack)
    user, sid = _user(stack), str(uuid.uuid4())
    assert _request_run(stack, sid, user, f"uploads/{user}/a.wav")["outcome"] == "created"
    run_id = _run("status-probe/mute", {"session_id": sid, "user_id": user, "seconds": 0.2}, key=sid)
    assert stack.prefect.wait_run(run_id, 120)["state"]["type"] == "COMPLETED"
    assert stack.store.get(sid).status is Status.PENDING  # nobody wrote the run's states

    async def observe() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(StatusObserver(store=stack.store, terminal_grace_s=0).run(stop))
        try:
            for _ in range(300):
                if stack.store.get(sid).status is Status.COMPLETED:
                    return
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await task

    asyncio.run(observe())
    row = stack.store.get(sid)
    assert (row.status, row.flow_run_id, row.attempt) == (Status.COMPLETED, run_id, 0)
