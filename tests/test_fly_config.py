"""The fly-machines pool's template, the Machine a run becomes, and the exit-code reading: pure logic."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from deployments.fly_worker import FlyMachinesJobConfiguration, FlyMachinesVariables, FlyMachinesWorker
from deployments.fly_worker.client import TokenBucket
from deployments.fly_worker.config import auth_header, exit_code_of, machine_name

pytestmark = pytest.mark.unit

VARIABLES = {"name", "labels", "env", "app", "image", "region", "cpu_kind", "cpus", "memory_mb", "max_runtime_s"}


def test_default_base_job_template_has_the_documented_variables():
    tpl = FlyMachinesWorker.get_default_base_job_template()
    props = tpl["variables"]["properties"]
    assert set(props) == VARIABLES
    assert props["region"]["default"] == "nrt" and props["cpu_kind"]["default"] == "performance"
    # the hosts the worker's token goes to are its own settings; the command is always Prefect's
    assert not {"api_url", "logs_url", "command"} & set(props)
    assert set(tpl["job_configuration"]) == VARIABLES  # no command: `prefect flow-run execute`
    assert all(v == "{{ " + k + " }}" for k, v in tpl["job_configuration"].items())
    assert FlyMachinesWorker.type == "fly-machines"


def _config(**values) -> tuple[FlyMachinesJobConfiguration, str]:
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    defaults = FlyMachinesVariables(**values).model_dump()
    config = FlyMachinesJobConfiguration(**{k: v for k, v in defaults.items() if k in FlyMachinesJobConfiguration.model_fields})
    run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-otter")
    with temporary_settings({PREFECT_API_URL: "http://prefect.internal:4200/api", PREFECT_API_KEY: "pnu_secret"}):
        config.prepare_for_flow_run(run)
    return config, str(run.id)


def test_machine_request_carries_the_run_and_no_secret():
    config, run_id = _config(env={"FLY_API_TOKEN": "fm2_leak", "PREFECT_API_KEY": "x", "VIBEINSIGHT_STORAGE": "s3"},
                             region="nrt,hkg", cpus=2, memory_mb=4096)
    body = config.machine_request(run_id, "vibeinsight-fly")
    c = body["config"]
    assert c["env"]["PREFECT__FLOW_RUN_ID"] == run_id
    assert c["env"]["PREFECT_API_URL"] == "http://prefect.internal:4200/api"
    assert c["env"]["VIBEINSIGHT_STORAGE"] == "s3"
    assert not {"FLY_API_TOKEN", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"} & set(c["env"])
    assert "pnu_secret" not in str(body) and "fm2_leak" not in str(body)
    assert c["init"]["cmd"] == ["prefect", "flow-run", "execute"]
    assert c["guest"] == {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}
    assert c["auto_destroy"] is True and c["restart"] == {"policy": "no"}
    assert c["stop_config"]["signal"] == "SIGTERM"
    assert c["metadata"] == {"prefect_flow_run_id": run_id, "prefect_work_pool": "vibeinsight-fly",
                             "prefect_max_runtime_s": "21600"}  # any worker's sweep reads the limit back
    assert body["region"] == "nrt,hkg" and body["name"].startswith("prefect-brave-otter-")


def test_command_override_is_split_like_a_shell():
    config, run_id = _config(command="python -m flows.debug --flag 'two words'")
    assert config.machine_request(run_id)["config"]["init"]["cmd"] == ["python", "-m", "flows.debug", "--flag", "two words"]


def test_machine_name_is_dns_safe():
    assert machine_name("Weird Name_ü!", "3f2a9c1e-0d9b") == "prefect-weird-name-3f2a9c1e"
    assert machine_name(None, "abcdef1234") == "prefect-run-abcdef12"


def exit_event(code, *, monitor=False, oom=False, ts=0):
    inner = {"exit_event": {"exit_code": code, "oom_killed": oom, "requested_stop": False}}
    return {"type": "exit", "status": "stopped", "timestamp": ts, "request": {"MonitorEvent": inner} if monitor else inner}


def test_exit_code_from_the_newest_exit_event_in_either_shape():
    assert exit_code_of({"events": [exit_event(3, ts=3), {"type": "start", "timestamp": 2}, exit_event(0, ts=1)]}) == 3
    assert exit_code_of({"events": [exit_event(5, monitor=True, ts=9)]}) == 5
    assert exit_code_of({"events": [exit_event(0, ts=1), exit_event(2, ts=7)]}) == 2  # newest wins, whatever the order
    assert exit_code_of({"events": [exit_event(0, oom=True, ts=1)]}) == 137  # out of memory
    assert exit_code_of({"events": [{"type": "start", "timestamp": 1}]}) is None
    assert exit_code_of({}) is None


def test_auth_header():
    assert auth_header("FlyV1 fm2_abc,fm2_def") == "FlyV1 fm2_abc,fm2_def"
    assert auth_header("abc123") == "Bearer abc123"


def test_token_bucket_allows_a_burst_then_paces():
    """An injected clock that only moves when the bucket sleeps: the pace is exact, whatever the load."""
    now = [0.0]  # near zero: a float clock resolves the tiny top-up sleeps of the bucket's arithmetic

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def go() -> list[float]:
        bucket = TokenBucket(rate=10.0, burst=3, clock=lambda: now[0], sleep=sleep)
        stamps = []
        for _ in range(7):
            await bucket.acquire()
            stamps.append(round(now[0], 9))
        return stamps

    assert asyncio.run(go()) == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4]  # the burst at once, then one every 0.1 s
