"""The mirror end to end: a real Prefect server, a served flow (runner = supervisor, one engine
process per run), the status observer, reconcile-status, and a real PostgreSQL with the migrations.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from blocks.status_store import PostgresStatusStore
from tests.pg import create_database, drop_database
from tests.prefect_server import ROOT, LocalPrefect, deployment_ready, local_prefect
from tests.s3_server import free_port
from tests.waiting import wait_for
from vibeinsight.errors import user_message
from vibeinsight.schemas import Status

pytestmark = pytest.mark.e2e

PY = sys.executable


class TcpProxy:
    """127.0.0.1 proxy to PostgreSQL that the test can take down and bring back (a store outage)."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self._conns: list[socket.socket] = []
        self._srv = socket.create_server(("127.0.0.1", self.port))
        self._srv.settimeout(0.2)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._srv.accept()
            except OSError:
                continue
            if not self.up.is_set():
                client.close()  # refused mid-handshake, as when the database is unreachable
                continue
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self) -> None:
        self.up.clear()
        for s in self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()

    def close(self) -> None:
        self._stop = True
        self._srv.close()


@dataclass
class Stack:
    prefect: LocalPrefect
    pg_url: str
    proxy: TcpProxy
    pid_dir: Path
    flow_env: dict[str, str]  # the served flows write their rows through the proxy (a test can cut it)
    obs_env: dict[str, str]  # the observer and the CLI write directly
    store: PostgresStatusStore

    def serve(self, deployment: str) -> subprocess.Popen:
        code = ("import sys; from tests.status_flows import status_probe; "
                "status_probe.serve(name=sys.argv[1], limit=4, print_starting_message=False)")
        return self.prefect.spawn(f"serve-{deployment}", [PY, "-c", code, deployment], self.flow_env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("status-stack")
    pg_url = create_database()
    proxy = TcpProxy()
    dbname = pg_url.rsplit("/", 1)[1]
    writer = {"VIBEINSIGHT_STATUS_PG_ROLE": "service_role", "VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "0.3",
              "VIBEINSIGHT_STATUS_TERMINAL_GRACE_S": "1.5"}
    try:
        # server on SQLite, no pool or deployments (the flows are served), the observer writing directly
        with local_prefect(tmp, deploy=False, env={**writer, "VIBEINSIGHT_STATUS_URL": pg_url},
                           here={"VIBEINSIGHT_STATUS_URL": pg_url, "VIBEINSIGHT_STATUS_PG_ROLE": "service_role"}
                           ) as lp:
            lp.add_observer()
            base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIBEINSIGHT_", "SUPABASE_"))}
            common = dict(base, PREFECT_API_URL=lp.api_url, PREFECT_HOME=str(tmp / "prefect-client"),
                          PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="1",
                          PREFECT_LOGGING_LEVEL="WARNING", VIBEINSIGHT_HOME=str(lp.home), PYTHONPATH=str(ROOT),
                          **writer)
            st = Stack(prefect=lp, pg_url=pg_url, proxy=proxy, pid_dir=tmp / "pids",
                       flow_env=dict(common, VIBEINSIGHT_STATUS_URL=f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}"),
                       obs_env=dict(common, VIBEINSIGHT_STATUS_URL=pg_url),
                       store=PostgresStatusStore(url=pg_url, pg_role="service_role"))
            st.pid_dir.mkdir()
            st.serve("probe")
            from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

            # in-process flow runs (reconcile) log locally only
            with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
                wait_for(lambda: deployment_ready("status-probe/probe"), 120, 0.5, "the served deployment")
                yield st
    finally:
        proxy.close()
        drop_database(pg_url)



def _start(deployment: str, **params):
    from prefect.deployments import run_deployment

    session_id = str(uuid.uuid4())
    run = run_deployment(deployment, parameters=dict(session_id=session_id, **params), timeout=0)
    return session_id, str(run.id)


def _prefect_state(run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(uuid.UUID(run_id))).state.type.value

    return asyncio.run(read())


def _row(stack, sid):
    return stack.store.get(sid)


def _user(stack) -> str:
    uid = str(uuid.uuid4())
    with psycopg.connect(stack.pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO auth.users (id) VALUES (%s)", (uid,))
    return uid


def test_a_full_run_is_mirrored_with_live_progress(stack):
    user = _user(stack)
    sid, run_id = _start("status-probe/probe", user_id=user, seconds=3.0)
    seen = []

    def done():
        row = _row(stack, sid)
        if row:
            seen.append(row)
        return row and row.status.terminal

    wait_for(done, 90, what="a terminal row")
    row = _row(stack, sid)
    assert row.status is Status.COMPLETED and row.progress == 100 and row.flow_run_id == run_id
    assert row.result_key == f"results/{sid}.json" and row.user_id == user
    running = [r for r in seen if r.status is Status.RUNNING and r.stage == "transcribe"]
    assert len({r.progress for r in running}) >= 2, "live progress should reach the row while running"
    assert [r.seq for r in seen] == sorted(r.seq for r in seen)  # never backwards
    assert _prefect_state(run_id) == "COMPLETED"
    with psycopg.connect(stack.pg_url) as conn:
        deployment = conn.execute("SELECT deployment FROM processing_status WHERE session_id = %s", (sid,)).fetchone()[0]
    assert deployment == "probe"  # filled by the observer from the event's related resources


def test_a_failed_run_keeps_the_hooks_reason_code(stack):
    sid, run_id = _start("status-probe/probe", seconds=0.5, fail=True)
    wait_for(lambda: (r := _row(stack, sid)) and r.status.terminal, 90, what="a terminal row")
    time.sleep(2.5)  # past the observer's grace: its FAILED must not replace the hook's record
    row = _row(stack, sid)
    assert row.status is Status.FAILED and row.error_code == "corrupt"
    assert row.error_message == user_message("corrupt")  # the fixed sentence, not ffmpeg's text
    assert _prefect_state(run_id) == "FAILED"


def test_a_store_outage_mid_run_does_not_break_the_run_and_the_row_catches_up(stack):
    sid, run_id = _start("status-probe/probe", seconds=12.0)
    wait_for(lambda: (r := _row(stack, sid)) and r.stage == "transcribe", 90, what="a running row")
    stack.proxy.down()
    try:
        time.sleep(2.5)  # the outage lasts a while: the run goes on, its writes fail meanwhile
        during = _row(stack, sid)
    finally:
        stack.proxy.up.set()
    # progress resumes after the outage (only the flow's own writer sends progress): a RUNNING row
    # further on than during the outage, seen before the terminal one (the run lasts 12 s)
    seen = []
    wait_for(lambda: seen.append(r := _row(stack, sid)) or r.status.terminal, 90, 0.05, what="a terminal row")
    resumed = [r for r in seen if r.status is Status.RUNNING and r.progress > during.progress]
    assert resumed, [(r.status, r.progress) for r in seen]
    assert _row(stack, sid).status is Status.COMPLETED
    assert _prefect_state(run_id) == "COMPLETED"
    log = stack.prefect.log("serve-probe")
    assert "status write for " + sid in log  # the writer saw the failure and retried


def _engine_pid(stack, sid) -> int:
    return int(wait_for(lambda: (p := stack.pid_dir / f"{sid}.pid").is_file() and p.read_text(), 90, what="the engine pid"))


def test_sigkill_of_the_engine_ends_crashed(stack):
    sid, run_id = _start("status-probe/probe", seconds=60.0, pid_dir=str(stack.pid_dir))
    pid = _engine_pid(stack, sid)
    wait_for(lambda: (r := _row(stack, sid)) and r.status is Status.RUNNING, 90, what="a running row")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (r := _row(stack, sid)) and r.status.terminal, 90, what="a terminal row")
    row = _row(stack, sid)
    assert row.status is Status.CRASHED and row.error_code == "crashed"
    assert _prefect_state(run_id) == "CRASHED"


def test_sigkill_of_engine_and_supervisor_is_repaired_by_reconcile(stack):
    from flows.reconcile_status import reconcile_once

    supervisor = stack.serve("probe-doomed")
    wait_for(lambda: deployment_ready("status-probe/probe-doomed"), 120, 0.5, "the second deployment")
    sid, run_id = _start("status-probe/probe-doomed", seconds=120.0, pid_dir=str(stack.pid_dir))
    pid = _engine_pid(stack, sid)
    wait_for(lambda: (r := _row(stack, sid)) and r.status is Status.RUNNING, 90, what="a running row")
    os.killpg(supervisor.pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    supervisor.wait(10)
    time.sleep(3)  # a while in which nothing may happen: that is what is checked next
    # nobody proposed Crashed: Prefect still says RUNNING and so does the row
    assert _prefect_state(run_id) == "RUNNING" and _row(stack, sid).status is Status.RUNNING
    # a young silence is left alone …
    assert sid not in {r["session_id"] for r in asyncio.run(reconcile_once(min_age_s=0, stale_after_s=600))}
    # … an old one is declared Crashed in Prefect and in the row
    repaired = asyncio.run(reconcile_once(min_age_s=0, stale_after_s=2))
    assert {"session_id": sid, "flow_run_id": run_id, "from": "RUNNING", "to": "CRASHED"} in repaired
    assert _prefect_state(run_id) == "CRASHED"
    row = _row(stack, sid)
    assert row.status is Status.CRASHED and row.error_code == "crashed" and row.error_message == user_message("crashed")


def test_reconcile_marks_a_row_whose_flow_run_is_missing(stack):
    from flows.reconcile_status import reconcile_once
    from vibeinsight.schemas import StatusUpdate

    sid, ghost = str(uuid.uuid4()), str(uuid.uuid4())
    stack.store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=1, flow_run_id=ghost, progress=30))
    repaired = asyncio.run(reconcile_once(min_age_s=0, stale_after_s=600))
    assert {"session_id": sid, "flow_run_id": ghost, "from": "RUNNING", "to": "CRASHED"} in repaired
    assert _row(stack, sid).error_message == user_message("crashed")  # the fixed sentence; the cause is logged


def test_a_cancelled_run_ends_cancelled(stack):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    sid, run_id = _start("status-probe/probe", seconds=60.0, pid_dir=str(stack.pid_dir))
    _engine_pid(stack, sid)
    wait_for(lambda: (r := _row(stack, sid)) and r.status is Status.RUNNING, 90, what="a running row")

    async def cancel():
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(run_id), Cancelling(), force=True)

    asyncio.run(cancel())
    wait_for(lambda: (r := _row(stack, sid)) and r.status.terminal, 90, what="a terminal row")
    row = _row(stack, sid)
    assert row.status is Status.CANCELLED and row.error_code == "cancelled"
    assert _prefect_state(run_id) == "CANCELLED"


def test_the_reconcile_cli_repairs_and_reports_json(stack):
    import json

    from vibeinsight.schemas import StatusUpdate

    sid, ghost = str(uuid.uuid4()), str(uuid.uuid4())
    stack.store.apply(StatusUpdate(session_id=sid, status=Status.PENDING, seq=1, flow_run_id=ghost))
    out = subprocess.run([PY, "-m", "vibeinsight", "reconcile", "--min-age", "0", "--stale-after", "600"],
                         cwd=ROOT, env=stack.obs_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    repaired = json.loads(out.stdout.strip().splitlines()[-1])["repaired"]
    assert {"session_id": sid, "flow_run_id": ghost, "from": "PENDING", "to": "CRASHED"} in repaired
    assert _row(stack, sid).status is Status.CRASHED


def test_the_reconcile_flow_gives_a_stuck_row_its_runs_terminal_state(stack):
    from flows.reconcile_status import reconcile_status
    from vibeinsight.schemas import StatusUpdate

    done_sid, run_id = _start("status-probe/probe", seconds=0.2)
    wait_for(lambda: _prefect_state(run_id) == "COMPLETED", 90, what="a completed run")
    # as if the hooks' final write and the observer had both been lost: the row still says RUNNING
    stuck = str(uuid.uuid4())
    stack.store.apply(StatusUpdate(session_id=stuck, status=Status.RUNNING, seq=1, flow_run_id=run_id, progress=40))
    repaired = asyncio.run(reconcile_status(min_age_s=0, stale_after_s=600))
    assert {"session_id": stuck, "flow_run_id": run_id, "from": "RUNNING", "to": "COMPLETED"} in repaired
    row = _row(stack, stuck)
    assert row.status is Status.COMPLETED and row.progress == 100 and row.result_key == f"results/{stuck}.json"
