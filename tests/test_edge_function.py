"""The Supabase Edge Function (infra/supabase/functions/process-audio) under Deno's own test runner,
against real parts started here: SeaweedFS's S3 (signatures checked) and the PostgREST stand-in on a
real PostgreSQL with every migration (tests/fake_postgrest.py). The Deno tests serve their own Auth
and Prefect stand-ins."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.fake_postgrest import FakePostgrest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def deno() -> str:
    exe = shutil.which("deno")
    if exe is None:
        pytest.fail("deno not installed (bin/bootstrap test installs it: npm install -g deno)")
    return exe


def test_edge_function_deno_tests(s3_server, pg_url, tmp_path):
    s3_server.bucket("edge-test")
    users = [str(uuid.uuid4()) for _ in range(3)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for u in users:
            conn.execute("insert into auth.users (id) values (%s)", (u,))
    with FakePostgrest(pg_url) as rest:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), "NO_COLOR": "1",
               "EDGE_TEST_S3_ENDPOINT": s3_server.endpoint, "EDGE_TEST_S3_KEY": s3_server.access_key_id,
               "EDGE_TEST_S3_SECRET": s3_server.secret_access_key, "EDGE_TEST_S3_BUCKET": "edge-test",
               "EDGE_TEST_POSTGREST_URL": rest.url, "EDGE_TEST_SERVICE_KEY": rest.service_key,
               "EDGE_TEST_USER_A": users[0], "EDGE_TEST_USER_B": users[1], "EDGE_TEST_USER_C": users[2]}
        log = tmp_path / "deno.log"
        with log.open("w") as f:
            try:
                code = subprocess.run([deno(), "test", "--allow-net", "--allow-env", "--allow-read", "--no-prompt",
                                       "infra/supabase/functions/process-audio/"],
                                      cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=150, env=env).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
    out = log.read_text()
    assert code == 0, out[-8000:]
    m = re.search(r"ok \| (\d+) passed \| 0 failed", out)
    assert m and int(m.group(1)) >= 12, out


def test_edge_function_type_checks_and_lints():
    """`deno check` and `deno lint` of the function, as `supabase functions deploy` would bundle it."""
    for args in (["check", "infra/supabase/functions/process-audio/index.ts", "infra/supabase/functions/process-audio/serve.ts"],
                 ["lint", "infra/supabase/functions/"]):
        out = subprocess.run([deno(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()),
                                  "NO_COLOR": "1"})
        assert out.returncode == 0, out.stdout + out.stderr


def test_deno_run_serves_the_function_on_port():
    """Supabase's entrypoint served as the README says: `deno run … index.ts` on 127.0.0.1:$PORT, routes at
    the root (a CORS preflight needs no caller, so nothing else has to run)."""
    import urllib.request

    from tests.s3_server import free_port
    from tests.waiting import wait_for

    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), "NO_COLOR": "1", "PORT": str(port),
           "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "k", "PREFECT_API_URL": "http://127.0.0.1:9",
           "FLY_S3_ACCESS_KEY_ID": "a", "FLY_S3_SECRET_ACCESS_KEY": "s",
           "VIBEINSIGHT_ALLOWED_ORIGIN": "https://app.example"}
    proc = subprocess.Popen([deno(), "run", "--allow-net", "--allow-env", "--allow-read",
                             "infra/supabase/functions/process-audio/index.ts"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def preflight():
            req = urllib.request.Request(f"http://127.0.0.1:{port}/process", method="OPTIONS",
                                         headers={"Origin": "https://app.example"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, dict(r.headers)
            except OSError:
                return None if proc.poll() is None else (0, {})

        status, headers = wait_for(preflight, 120, 0.3, "deno run index.ts to serve")
        assert status == 204, proc.stderr.read().decode() if proc.poll() is not None else status
        assert {k.lower(): v for k, v in headers.items()}.get("access-control-allow-origin") == "https://app.example"
    finally:
        proc.kill()
        proc.wait(10)
