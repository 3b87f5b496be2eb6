"""logs.configure() in a process that imported Prefect first (the status observer does): Prefect's
loggers and ours write JSON at LOG_LEVEL, each line with the session bound where it was logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    import logging, sys
    from blocks import registry  # imports Prefect, as the observer does, before logging is configured
    from prefect.logging import get_logger
    from vibeinsight import logs

    logs.configure("INFO")
    logging.getLogger("vibeinsight.status_observer").debug("not at INFO")
    with logs.bind(session_id=sys.argv[1], flow_run_id="run-1"):
        logging.getLogger("vibeinsight.status_observer").info("%s COMPLETED applied", sys.argv[1])
        get_logger("prefect.events.clients").warning("reconnecting with key sk-proc-test-5a1d77")
    logging.getLogger("vibeinsight.status_observer").info("idle")
""")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_after_prefect_import(fmt):
    sid = str(uuid.uuid4())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    env.update(LOG_FORMAT=fmt, OPENAI_API_KEY="sk-proc-test-5a1d77", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", SCRIPT, sid], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "sk-proc-test-5a1d77" not in p.stderr and "not at INFO" not in p.stderr
    lines = p.stderr.splitlines()
    if fmt == "text":
        assert any(line.endswith(f"{sid} COMPLETED applied") for line in lines)
        assert any("reconnecting with key ***" in line for line in lines)
        return
    records = [json.loads(line) for line in lines]
    assert [r["msg"] for r in records] == [f"{sid} COMPLETED applied", "reconnecting with key ***", "idle"]
    assert [r["level"] for r in records] == ["INFO", "WARNING", "INFO"]
    assert records[0]["trace_id"] == records[1]["trace_id"] == uuid.UUID(sid).hex
    assert records[1]["logger"] == "prefect.events.clients" and records[1]["flow_run_id"] == "run-1"
    assert records[2]["session_id"] is None and records[2]["trace_id"] is None
