"""`vibeinsight doctor` as an operator runs it: a real process, the real ffmpeg lookup, a real socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def doctor(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_API", "VIBEINSIGHT_", "FLY_S3_", "SUPABASE_", "OPENAI_", "GEMINI_",
                                 "GOOGLE_"))}
    base.update(VIBEINSIGHT_HOME=str(home), **env)
    return subprocess.run([sys.executable, "-m", "vibeinsight", "doctor", *args], capture_output=True, text=True,
                          env=base, timeout=120)


def lines(p: subprocess.CompletedProcess) -> dict[str, str]:
    """{check name: its line}; every check is one line of stdout."""
    out = {}
    for line in p.stdout.splitlines():
        state, name = line[:4].strip(), line[6:].split("  ")[0].strip()
        assert state in ("ok", "FAIL") and name not in out, line
        out[name] = line
    return out


def failing(p: subprocess.CompletedProcess) -> set[str]:
    return {name for name, line in lines(p).items() if line.startswith("FAIL")}


def closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_good_on_the_embedded_defaults(tmp_path):
    p = doctor(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    checks = lines(p)
    assert {"ffmpeg", "ffprobe", "model", "prefect", "bucket", "status store", "plans file"} <= set(checks)
    assert not failing(p)
    assert "at /" in checks["ffmpeg"]
    doc = json.loads(doctor(tmp_path, "--json").stdout)
    assert doc["ok"] is True and {c["name"] for c in doc["checks"]} == set(checks)


def test_missing_ffmpeg_is_its_own_line_and_fails(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    p = doctor(tmp_path, PATH=str(empty))
    assert p.returncode == 1
    assert failing(p) == {"ffmpeg", "ffprobe"}
    assert "not on PATH" in lines(p)["ffmpeg"] and "fix: install ffmpeg" in lines(p)["ffmpeg"]


def test_unreachable_bucket_is_its_own_line_and_fails(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    p = doctor(tmp_path, FLY_S3_ENDPOINT=endpoint, FLY_S3_ACCESS_KEY_ID="doctor", FLY_S3_SECRET_ACCESS_KEY="doctor")
    assert p.returncode == 1
    assert failing(p) == {"bucket"}
    assert endpoint in lines(p)["bucket"] and "fix: check FLY_S3_ENDPOINT" in lines(p)["bucket"]
    doc = json.loads(doctor(tmp_path, "--json", FLY_S3_ENDPOINT=endpoint, FLY_S3_ACCESS_KEY_ID="doctor",
                            FLY_S3_SECRET_ACCESS_KEY="doctor").stdout)
    assert doc["ok"] is False and [c["name"] for c in doc["checks"] if not c["ok"]] == ["bucket"]
    assert "doctor" not in json.dumps(doc)  # the secret never printed


def test_reachable_bucket_passes(tmp_path, s3_server):
    s3_server.bucket("doctor-bucket")
    p = doctor(tmp_path, **s3_server.env(), FLY_S3_BUCKET_NAME="doctor-bucket")
    assert p.returncode == 0, p.stdout
    assert "doctor-bucket answers" in lines(p)["bucket"]


@pytest.mark.parametrize("engine, value, name, key", [
    ("VIBEINSIGHT_TRANSCRIBER", "openai", "openai key", "OPENAI_API_KEY"),
    ("VIBEINSIGHT_ANALYZER", "gemini", "gemini key", "GEMINI_API_KEY")])
def test_missing_key_is_its_own_line_and_fails(tmp_path, engine, value, name, key):
    p = doctor(tmp_path, **{engine: value})
    assert p.returncode == 1
    assert failing(p) == {name}
    assert f"fix: set {key}" in lines(p)[name]
    assert doctor(tmp_path, **{engine: value, key: "sk-doctor"}).returncode == 0  # the key is all it lacked


def test_unreachable_prefect_api_is_its_own_line_and_fails(tmp_path):
    p = doctor(tmp_path, PREFECT_API_URL=f"http://127.0.0.1:{closed_port()}/api")
    assert p.returncode == 1
    assert failing(p) == {"prefect"}
    assert "fix: start the server" in lines(p)["prefect"]


def test_postgres_status_store_with_and_without_the_migrations(tmp_path, pg_url):
    from tests.pg import create_database, drop_database

    assert doctor(tmp_path, VIBEINSIGHT_STATUS_URL=pg_url).returncode == 0
    bare = create_database(apply_migrations=False)
    try:
        p = doctor(tmp_path, VIBEINSIGHT_STATUS_URL=bare)
        assert p.returncode == 1
        assert failing(p) == {"status store"}
        assert "no public.processing_status" in lines(p)["status store"]
    finally:
        drop_database(bare)


def test_a_run_token_checks_the_one_read_a_run_makes(tmp_path, pg_url):
    """In the runs app's environment (a run token, no service role key) the status store is checked with the
    call a run makes (public.session_writer), not a table read the token may not do."""
    from tests.fake_postgrest import FakePostgrest
    from vibeinsight.run_token import mint_run_token

    with FakePostgrest(pg_url) as rest:
        env = dict(SUPABASE_URL=rest.url, SUPABASE_ANON_KEY=rest.anon_key)
        p = doctor(tmp_path, **env, SUPABASE_RUN_TOKEN=mint_run_token("s" * 40, days=1))
        assert p.returncode == 0 and not failing(p), p.stdout + p.stderr
        assert "Supabase REST" in lines(p)["status store"]
        assert any("/rpc/session_writer" in r["path"] for r in rest.requests)
        p = doctor(tmp_path, **env)  # a URL and no credential: rows would go to a local file
        assert p.returncode == 1 and failing(p) == {"supabase key"}, p.stdout
