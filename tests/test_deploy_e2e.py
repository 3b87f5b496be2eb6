"""Deployments end to end: a real Prefect server, `prefect deploy --all` from prefect.yaml, real
workers on the vibeinsight-fly pool, runs created through the REST API as the Edge Function does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from tests.prefect_server import FAST_WORKERS, ROOT, local_prefect
from tests.prefect_server import status_row as row

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    with local_prefect(tmp_path_factory.mktemp("deploy"), workers=1, observer=True, env=FAST_WORKERS) as lp:
        yield lp


def test_deploy_all_creates_the_deployments(prefect):
    # by entrypoint: process-audio/api and transcribe-part/api share their deployment name
    deps = {d["entrypoint"].split(":")[1]: d for d in prefect.post("/deployments/filter", {"limit": 50})}
    assert {"process_audio", "transcribe_part", "quota_report", "reconcile_status"} <= set(deps)
    api = deps["process_audio"]
    part = deps["transcribe_part"]
    assert (part["name"], part["work_pool_name"], part["work_queue_name"]) == ("api", "vibeinsight-fly", "realtime")
    assert set(part["parameter_openapi_schema"]["properties"]) == {"session_id", "part"}
    assert api["work_pool_name"] == "vibeinsight-fly" and api["work_queue_name"] == "realtime"
    assert api["entrypoint"] == "flows.process_audio:process_audio"
    assert set(api["parameter_openapi_schema"]["properties"]) == {"source", "session_id", "user_id", "language",
                                                                  "vocabulary", "speakers", "max_speakers"}
    assert api["parameter_openapi_schema"]["required"] == ["source"]
    assert api["pull_steps"] == []
    sched = deps["quota_report"]["schedules"][0]["schedule"]
    assert sched["cron"] == "0 9 * * *" and sched["timezone"] == "Asia/Tokyo"
    assert deps["reconcile_status"]["schedules"][0]["schedule"]["interval"] == 300
    queues = {q["name"]: q["priority"] for q in prefect.post("/work_pools/vibeinsight-fly/queues/filter", {})}
    assert queues["realtime"] < queues["default"]  # uploads before reports
    pool = prefect.get("/work_pools/vibeinsight-fly")
    assert pool["type"] == "process"  # the local stand-in for fly-machines
    # a run is one process, the engine (no workspace supervisor before it): deployments/deploy.py
    assert pool["base_job_template"]["variables"]["properties"]["command"]["default"] == "python -m prefect.engine"


def test_trigger_runs_to_completed_and_is_idempotent(prefect, audio):
    from deployments.trigger import trigger
    sid = str(uuid.uuid4())
    uid = str(uuid.uuid4())
    first = trigger(str(audio / "hotwords.mp3"), session_id=sid, user_id=uid, language="en",
                    api_url=prefect.api_url)
    assert row(sid, {"PENDING", "RUNNING", "COMPLETED"}, 5).user_id == uid  # PENDING written before the run
    again = trigger(str(audio / "hotwords.mp3"), session_id=sid, user_id=uid, language="en",
                    api_url=prefect.api_url)
    assert again.flow_run_id == first.flow_run_id  # idempotency_key = session id: no second run
    run = prefect.wait_run(first.flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    placed = run["parameters"].pop("source")  # the file, placed among the local bucket's uploads first
    assert placed.startswith(str((prefect.home / "bucket" / "uploads" / uid).resolve()))
    assert open(placed, "rb").read() == (audio / "hotwords.mp3").read_bytes()
    assert run["parameters"] == {"session_id": sid, "user_id": uid, "language": "en"}
    r = row(sid, {"COMPLETED"})
    assert r.progress == 100 and r.flow_run_id == first.flow_run_id
    runs = prefect.post("/flow_runs/filter", {"flow_runs": {"tags": {"all_": ["trigger:cli"]}}, "limit": 200})
    assert sum(1 for x in runs if x["parameters"].get("session_id") == sid) == 1
    assert (prefect.home / "bucket" / "results" / f"{sid}.json").is_file()


def test_cli_trigger_failing_input_reaches_failed_with_code(prefect, tmp_path):
    missing = tmp_path / "nope.wav"
    sid = str(uuid.uuid4())
    env = {**os.environ, "PREFECT_API_URL": prefect.api_url, "VIBEINSIGHT_HOME": str(prefect.home)}
    out = subprocess.run([sys.executable, "-m", "vibeinsight", "trigger", str(missing),
                          "--session-id", sid, "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["flow_run_id"]
    run = prefect.wait_run(run_id)
    assert run["state"]["type"] == "FAILED"
    r = row(sid, {"FAILED"})
    assert r.error_code == "not_found"


def test_cli_trigger_bad_session_id_is_a_clear_error(prefect):
    env = {**os.environ, "PREFECT_API_URL": prefect.api_url}
    out = subprocess.run([sys.executable, "-m", "vibeinsight", "trigger", "x.wav",
                          "--session-id", "not-a-uuid"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("error: trigger_failed:")


def test_cancel_from_api_reaches_cancelled(prefect, audio, tmp_path):
    from deployments.trigger import trigger
    long = tmp_path / "long.flac"  # 66 s: long enough to be cancelled mid-transcription
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "5", "-i", str(audio / "jfk.flac"),
                    "-c:a", "flac", str(long)], check=True)
    sid = str(uuid.uuid4())
    t = trigger(str(long), session_id=sid, language="en", api_url=prefect.api_url)
    row(sid, {"RUNNING"}, 180)
    prefect.post(f"/flow_runs/{t.flow_run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
    run = prefect.wait_run(t.flow_run_id)
    assert run["state"]["type"] == "CANCELLED"
    assert row(sid, {"CANCELLED"}).status.value == "CANCELLED"


def test_two_workers_share_ten_sessions_each_once(prefect, audio):
    from deployments.trigger import trigger
    prefect.add_worker("worker-2")
    sids = [str(uuid.uuid4()) for _ in range(10)]
    runs = [trigger(str(audio / "hotwords.mp3"), session_id=s, language="en", api_url=prefect.api_url)
            for s in sids]
    for t in runs:
        assert prefect.wait_run(t.flow_run_id, 600)["state"]["type"] == "COMPLETED"
    for s in sids:
        assert row(s, {"COMPLETED"}).progress == 100
    picked = {}
    for w in ("worker-1", "worker-2"):
        text = (prefect.logs / f"{w}.log").read_text()
        # both workers may reach for the same run; the server lets one through, the other logs an abort
        picked[w] = {t.flow_run_id for t in runs
                     if re.search(rf"submitting flow run '{t.flow_run_id}'", text, re.I)
                     and not re.search(rf"Aborted submission of flow run '{t.flow_run_id}'", text)}
    assert picked["worker-1"] and picked["worker-2"], picked  # spread over both
    assert not picked["worker-1"] & picked["worker-2"]  # never processed twice
    assert picked["worker-1"] | picked["worker-2"] == {t.flow_run_id for t in runs}
    for t in runs:
        assert prefect.get(f"/flow_runs/{t.flow_run_id}")["run_count"] == 1
