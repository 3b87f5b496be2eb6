"""`vibeinsight stack up|status|down` and `vibeinsight trigger`, as an operator runs them: a Prefect
server on the machine's PostgreSQL, the pool and deployments, a worker and the status observer."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

from deployments.stack import free_port
from tests.prefect_server import ROOT

PY = str(ROOT / ".venv/bin/python")


def cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "vibeinsight", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_stack_up_trigger_down(tmp_path, audio):
    import psycopg
    db = f"prefect_stack_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "VIBEINSIGHT_HOME": str(tmp_path / "home"), "VIBEINSIGHT_WHISPER_MODEL": "tiny.en"}
    env.pop("PREFECT_API_URL", None)
    try:
        up = cli("stack", "up", "--port", str(port), "--db-url", f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}",
                 env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        status = cli("stack", "status", env=env)
        assert status.returncode == 0 and status.stdout.count(" up") == 3, status.stdout  # server, worker, observer
        again = cli("stack", "up", "--port", str(port), env=env)
        assert again.returncode != 0 and "already up" in again.stderr + again.stdout
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        sid = str(uuid.uuid4())
        t = cli("trigger", str(audio / "hotwords.mp3"), "--session-id", sid, "--language", "en", "--json", env=env)
        assert t.returncode == 0, t.stderr
        assert json.loads(t.stdout)["session_id"] == sid
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            st = cli("status", sid, "--json", env=env, timeout=60)
            if st.returncode == 0 and json.loads(st.stdout)["status"] in ("COMPLETED", "FAILED", "CRASHED"):
                break
            time.sleep(2)
        row = json.loads(st.stdout)
        assert row["status"] == "COMPLETED" and row["progress"] == 100, row
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as c:  # the server's own database
            assert c.execute("select count(*) from flow_run where id = %s", (json.loads(t.stdout)["flow_run_id"],)
                             ).fetchone()[0] == 1
    finally:
        down = cli("stack", "down", env=env)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute(f'drop database if exists "{db}" with (force)')
    assert down.returncode == 0 and "server" in down.stdout
    assert cli("stack", "status", env=env).returncode == 1
