"""`vibeinsight web`: the page's files and its /config.json, from the environment."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.prefect_server import ROOT
from tests.s3_server import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("VIBEINSIGHT_FUNCTION_URL", "SUPABASE_URL", "SUPABASE_ANON_KEY")}
    return {**env, **extra}


def test_the_page_and_its_configuration_are_served(tmp_path):
    port = free_port()
    env = _env(VIBEINSIGHT_FUNCTION_URL="https://ref.supabase.co/functions/v1/process-audio/",
               SUPABASE_URL="https://ref.supabase.co", SUPABASE_ANON_KEY="anon-key", VIBEINSIGHT_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "vibeinsight", "web", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return _get(base + "/config.json")[0] == 200
            except OSError:
                return proc.poll() is not None
        wait_for(up, 60, 0.2, "vibeinsight web")
        assert proc.poll() is None, proc.stdout.read()
        status, body, ctype = _get(base + "/config.json")
        assert ctype.startswith("application/json")
        assert json.loads(body) == {"functionUrl": "https://ref.supabase.co/functions/v1/process-audio",
                                    "supabaseUrl": "https://ref.supabase.co", "anonKey": "anon-key"}
        status, body, ctype = _get(base + "/?poll_ms=500")
        assert status == 200 and ctype.startswith("text/html")
        for testid in ("token", "file", "start", "progress", "stage", "status", "transcript", "error"):
            assert f'data-testid="{testid}"' in body.decode()
        status, body, ctype = _get(base + "/app.js")
        assert status == 200 and "javascript" in ctype and len(body) > 10_000
        # nothing else of the folder: not the sources, not a listing
        assert _get(base + "/src/app.ts")[0] == 404
        assert _get(base + "/src/")[0] == 404
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_missing_variable_is_named_and_exits_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vibeinsight", "web", "--port", "0"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env=_env(VIBEINSIGHT_FUNCTION_URL="https://x", SUPABASE_URL="https://y",
                                                         VIBEINSIGHT_HOME=str(tmp_path)))
    assert out.returncode == 2
    assert "SUPABASE_ANON_KEY" in out.stderr
