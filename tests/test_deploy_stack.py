"""`vibeinsight stack up|status|down` and `vibeinsight trigger`, as an operator runs them: a Prefect
server on the machine's PostgreSQL, the pool and deployments, a worker and the status observer.

Here the CLI starts the stack itself (what is under test); tests.prefect_server gives the fresh
PostgreSQL database for its server and the REST client that watches the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from deployments.stack import free_port
from tests.prefect_server import ROOT, LocalPrefect, prefect_database, psycopg_url
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vibeinsight", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_stack_up_trigger_down(tmp_path, audio):
    port = free_port()
    home = tmp_path / "home"
    env = {**os.environ, "VIBEINSIGHT_HOME": str(home), "VIBEINSIGHT_WHISPER_MODEL": "tiny.en"}
    env.pop("PREFECT_API_URL", None)
    with prefect_database() as db_url:
        try:
            up = cli("stack", "up", "--port", str(port), "--db-url", db_url, env=env)
            assert up.returncode == 0, up.stdout + up.stderr
            status = cli("stack", "status", env=env)
            assert status.returncode == 0 and status.stdout.count(" up") == 3, status.stdout  # server, worker, observer
            again = cli("stack", "up", "--port", str(port), env=env)
            assert again.returncode != 0 and "already up" in again.stderr + again.stdout
            env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
            sid = str(uuid.uuid4())
            t = cli("trigger", str(audio / "hotwords.mp3"), "--session-id", sid, "--language", "en", "--json",
                    env=env)
            assert t.returncode == 0, t.stderr
            triggered = json.loads(t.stdout)
            assert triggered["session_id"] == sid
            server = LocalPrefect(env["PREFECT_API_URL"], home, home / "stack", "vibeinsight-fly")
            run = server.wait_run(triggered["flow_run_id"], 240)
            assert run["state"]["type"] == "COMPLETED", run["state"]

            def terminal_row():  # the row's terminal write may trail the run's state by a moment
                st = cli("status", sid, "--json", env=env, timeout=60)
                row = json.loads(st.stdout) if st.returncode == 0 else None
                return row if row and row["status"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

            row = wait_for(terminal_row, 60, 1, f"the status row of {sid}")
            assert row["status"] == "COMPLETED" and row["progress"] == 100, row
            with psycopg.connect(psycopg_url(db_url)) as c:  # the server's own database
                assert c.execute("select count(*) from flow_run where id = %s", (triggered["flow_run_id"],)
                                 ).fetchone()[0] == 1
        finally:
            down = cli("stack", "down", env=env)
    assert down.returncode == 0 and "server" in down.stdout
    assert cli("stack", "status", env=env).returncode == 1
