"""End to end on the fly-machines pool: a real Prefect server, `prefect deploy --all`, the worker,
the Fly stand-in running each Machine as a local process with an empty HOME and only the runs app's
secrets, SeaweedFS, PostgreSQL for status and ledger, and the status observer (tests/fly_stack.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.fly_stack import BIN, ROOT, RUNS_APP, FlyStack, base_env, fly_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

BURST = 5


@pytest.fixture(scope="module")
def fly(tmp_path_factory):
    with fly_stack(tmp_path_factory.mktemp("fly-e2e"), mode="fly") as fs:
        yield fs


def _wait_gone(fs: FlyStack, timeout_s: float = 90) -> list:
    """Machines still there after the runs ended (auto_destroy, or the worker's stop)."""
    deadline = time.monotonic() + timeout_s
    while fs.fly.live(RUNS_APP) and time.monotonic() < deadline:
        time.sleep(0.3)
    return fs.fly.live(RUNS_APP)


def test_a_burst_completes_one_machine_per_run_and_nothing_is_left(fly: FlyStack):
    deployment = fly.api("GET", "/deployments/name/process-audio/api")
    assert deployment["work_pool_name"] == "vibeinsight-fly" and deployment["pull_steps"] == []
    assert fly.api("GET", "/work_pools/vibeinsight-fly")["type"] == "fly-machines"

    sessions = fly.trigger(BURST)
    runs = fly.wait_runs([r for _, r in sessions])
    assert {state for state, _ in runs.values()} == {"COMPLETED"}, runs
    assert _wait_gone(fly) == []  # auto_destroy once each command exits: none left behind
    for sid, run_id in sessions:
        assert fly.row(sid, {"COMPLETED"}).progress == 100
        machines = fly.fly.by_run(run_id)
        assert len(machines) == 1, machines  # exactly one Machine per run
        m = machines[0]
        # only what the Machine should get: the run's id and API URL from the worker, the rest Fly's secrets
        assert m.env["PREFECT__FLOW_RUN_ID"] == run_id
        assert "FLY_API_TOKEN" not in m.env and "PREFECT_API_KEY" not in m.config["env"]
        assert m.config["restart"] == {"policy": "no"} and m.config["auto_destroy"]
        exit_event = next(e for e in m.events if e["type"] == "exit")["request"]["exit_event"]
        assert exit_event["exit_code"] == 0 and not exit_event["requested_stop"]  # it ended by itself
        assert f"results/{sid}.json" in fly.s3.keys("results/")
    homes = {m.env["HOME"] for m in fly.fly.machines.values()}
    assert len(homes) == len(fly.fly.machines)  # every Machine its own empty disk
    # creates were paced under Fly's limit: a burst of 2, then one a second on average (single gaps
    # jitter on a loaded machine: the spare token of Fly's burst of 3 takes that), and no 429
    assert fly.fly.count("POST", "/machines", 429) == 0
    times = fly.fly.create_times()
    assert len(times) == BURST and times[-1] - times[0] >= (BURST - 2) * 0.9
    # the chunk cache went to the bucket, not to a Machine's disk
    assert [k for k in fly.s3.keys("prefect-results/") if k.startswith("prefect-results/chunk-")]
    # the token never left the worker
    logs = "".join(p.read_text(errors="replace") for p in fly.logs.rglob("*.log"))
    assert fly.fly.token not in logs
    pool = json.dumps(fly.api("GET", "/work_pools/vibeinsight-fly")) + json.dumps(deployment)
    assert fly.fly.token not in pool and not any(fly.fly.token in json.dumps(m.config) for m in fly.fly.machines.values())


def test_the_quota_report_elsewhere_counts_every_run(fly: FlyStack, tmp_path):
    """Run on another machine (a fresh home, the production settings): the ledger is in PostgreSQL."""
    completed = len(fly.api("POST", "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                                                          "flows": {"name": {"any_": ["process-audio"]}}}))
    env = {**base_env(tmp_path, fly.api_url), **fly.secrets}
    out = subprocess.run([sys.executable, "-m", "vibeinsight", "quota", "report", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["files_processed"] == completed >= BURST
    assert report["api_calls"].get("openai", 0) >= BURST


def _running(fly: FlyStack) -> tuple[str, str, object]:
    """One session held in its transcription call (the OpenAI stand-in answers late): (sid, run, Machine)."""
    deadline = time.monotonic() + 60
    while fly.openai.in_flight:  # a call of an earlier test's killed run may still be held
        assert time.monotonic() < deadline
        time.sleep(0.2)
    fly.openai.delay_s = 30
    ((sid, run_id),) = fly.trigger(1)
    fly.row(sid, {"RUNNING"}, timeout_s=180)
    deadline = time.monotonic() + 120
    while not fly.openai.in_flight:  # the run is inside its Machine, mid-run
        assert time.monotonic() < deadline, "the run never reached its transcription call"
        time.sleep(0.2)
    (machine,) = fly.fly.by_run(run_id)
    return sid, run_id, machine


def test_a_machine_killed_mid_run_leaves_a_crashed_row(fly: FlyStack):
    sid, run_id, machine = _running(fly)
    try:
        fly.fly.kill(machine.id)  # the host dies: SIGKILL, exit 137
        (state, _), = fly.wait_runs([run_id], timeout_s=120).values()
    finally:
        fly.openai.delay_s = 0
    assert state == "CRASHED"
    run = fly.api("GET", f"/flow_runs/{run_id}")
    assert "137" in (run["state"]["message"] or "")
    assert fly.row(sid, {"CRASHED"}).status.value == "CRASHED"
    assert _wait_gone(fly) == []


def test_a_cancelled_run_stops_its_machine(fly: FlyStack):
    sid, run_id, machine = _running(fly)
    try:
        fly.api("POST", f"/flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
        (state, _), = fly.wait_runs([run_id], timeout_s=120).values()
    finally:
        fly.openai.delay_s = 0
    assert state == "CANCELLED"
    assert fly.row(sid, {"CANCELLED"}).status.value == "CANCELLED"
    assert _wait_gone(fly) == [] and machine.state == "destroyed"


def test_prefect_knows_the_worker_type_from_the_entry_point(tmp_path):
    env = {**base_env(tmp_path, "http://127.0.0.1:9/api")}
    out = subprocess.run([str(BIN / "prefect"), "work-pool", "get-default-base-job-template", "--type", "fly-machines"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1000:]
    props = json.loads(out.stdout)["variables"]["properties"]
    assert {"app", "image", "region", "cpu_kind", "cpus", "memory_mb", "env", "max_runtime_s"} <= set(props)
    assert not {"api_url", "logs_url", "command"} & set(props)  # the worker's own settings, Prefect's command
