"""The fly-machines worker on a real Prefect API (the session's test harness) and the Fly stand-in:
exit codes become results, max_runtime_s and kill_infrastructure stop and delete the Machine, and
the start-up sweep removes Machines of runs that are already over."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prefect import flow
from prefect.exceptions import InfrastructureNotAvailable, InfrastructureNotFound

from deployments.fly_worker import FlyMachinesJobConfiguration, FlyMachinesWorker
from deployments.fly_worker.client import FlyMachinesClient
from tests.fly_standin import FlyStandin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP = "runs"


@flow(name="fly-worker-probe")
def probe() -> None:
    pass


@pytest.fixture()
def fly(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path / "worker-home"))  # the worker books Machine time there
    with FlyStandin(logs=tmp_path) as f:
        f.add_app(APP, {"APP_SECRET": "from-fly"})
        monkeypatch.setenv("FLY_API_TOKEN", f.token)
        monkeypatch.setenv("FLY_API_URL", f.url)  # the worker's own hosts, not pool variables
        monkeypatch.setenv("FLY_LOGS_URL", f.url)
        yield f


def template(fly: FlyStandin, **defaults) -> dict:
    tpl = FlyMachinesWorker.get_default_base_job_template()
    values = {"app": APP, "image": "local", "cpu_kind": "shared", "cpus": 1, "memory_mb": 512, **defaults}
    for k, v in values.items():
        tpl["variables"]["properties"][k]["default"] = v
    # An operator's command variable (not in the default template): the tests' Machines run shell lines.
    tpl["variables"]["properties"]["command"] = {"type": "string", "default": "true"}
    tpl["job_configuration"]["command"] = "{{ command }}"
    return tpl


async def _run(fly: FlyStandin, command: str, *, pool: str | None = None, kill_after: float | None = None,
               after_start=None, **defaults):
    """One run of `command` in a Machine through the worker: (result, run, identifier).

    kill_after: kill_infrastructure that long after the Machine exists; after_start(worker, run) is
    awaited once it exists (the run is submitted) while the worker watches it."""
    pool = pool or f"fly-{uuid.uuid4().hex[:8]}"
    tpl = template(fly, **defaults)
    async with FlyMachinesWorker(work_pool_name=pool, base_job_template=tpl) as worker:
        run = await worker.client.create_flow_run(probe)
        config = await FlyMachinesJobConfiguration.from_template_and_values(tpl, {"command": command,
                                                                                   "env": {"FLY_API_TOKEN": "leak"}})
        config.prepare_for_flow_run(run)
        if kill_after is None and after_start is None:
            return await worker.run(run, config), run, None
        started = asyncio.get_running_loop().create_future()

        class Status:
            def started(self, value):
                started.set_result(value)

        task = asyncio.create_task(worker.run(run, config, task_status=Status()))
        identifier = await started
        if after_start is not None:
            await after_start(worker, run)
        if kill_after is not None:
            await asyncio.sleep(kill_after)
            await worker.kill_infrastructure(identifier, config, grace_seconds=5)
        return await asyncio.wait_for(task, 60), run, identifier


def test_a_machine_that_fails_before_prefect_starts_leaves_its_lines_in_the_run_log(fly, caplog):
    # what an image whose entrypoint cannot import the project prints, then exits: Prefect never ran
    command = "sh -c 'echo booting; echo \"ModuleNotFoundError: No module named vibeinsight\" >&2; exit 1'"
    with caplog.at_level("INFO", logger="prefect.flow_runs.worker"):
        result, run, _ = asyncio.run(_run(fly, command))
    assert result.status_code == 1
    (machine,) = fly.by_run(str(run.id))
    forwarded = [r.getMessage() for r in caplog.records if "before the flow run started" in r.getMessage()]
    assert len(forwarded) == 1 and machine.id in forwarded[0]
    assert "booting" in forwarded[0] and "No module named vibeinsight" in forwarded[0]


def test_one_machine_per_run_and_its_exit_code(fly):
    result, run, _ = asyncio.run(_run(fly, "sh -c 'test \"$APP_SECRET\" = from-fly && exit 3'"))
    assert result.status_code == 3 and not result
    machines = fly.by_run(str(run.id))
    assert len(machines) == 1 and result.identifier == f"{APP}:{machines[0].id}"
    m = machines[0]
    assert m.state == "destroyed"
    assert m.env["PREFECT__FLOW_RUN_ID"] == str(run.id) and m.env["PREFECT_API_URL"]
    assert "FLY_API_TOKEN" not in m.env and fly.token not in str(m.config)
    assert m.config["restart"] == {"policy": "no"} and m.config["auto_destroy"] is True
    assert m.env["HOME"] != str(__import__("pathlib").Path.home())


def test_exit_zero_is_success(fly):
    result, _, _ = asyncio.run(_run(fly, "true"))
    assert result.status_code == 0 and result


def _stops(fly: FlyStandin, machine_id: str) -> list:
    return fly.calls("POST", f"/machines/{machine_id}/stop", 200)


def _deletes(fly: FlyStandin, machine_id: str) -> list:
    return [c for c in fly.calls("DELETE", f"/machines/{machine_id}", 200) if c.path.endswith(machine_id)]


def test_a_run_past_max_runtime_is_stopped(fly):
    result, run, _ = asyncio.run(_run(fly, "sleep 60", max_runtime_s=2))
    assert result.status_code == -1
    (m,) = fly.by_run(str(run.id))
    assert len(_stops(fly, m.id)) == 1  # the worker asked Fly to stop it (auto_destroy then removes it)
    assert next(e for e in m.events if e["type"] == "exit")["request"]["exit_event"]["requested_stop"] is True
    assert m.state == "destroyed"


def test_kill_infrastructure_stops_with_sigterm(fly):
    result, run, identifier = asyncio.run(_run(fly, "sleep 60", kill_after=1.5))
    (m,) = fly.by_run(str(run.id))
    assert identifier == f"{APP}:{m.id}" and m.state == "destroyed"
    assert len(_stops(fly, m.id)) == 1
    assert result.status_code == 128 + 15  # SIGTERM first: Prefect's command can hand the run back


def test_kill_infrastructure_deletes_with_force_a_machine_that_does_not_stop(fly):
    """A wedged Machine: Fly takes the stop but nothing happens; after the grace the worker's forced
    DELETE (counted in the stand-in's request log) is what ends it."""
    fly.wedged_stops = True
    result, run, _ = asyncio.run(_run(fly, "sleep 60", kill_after=1.5))
    (m,) = fly.by_run(str(run.id))
    (stop,) = _stops(fly, m.id)
    (delete,) = _deletes(fly, m.id)
    assert delete.query == {"force": "true"} and delete.at > stop.at  # stop first, the forced delete after
    assert m.state == "destroyed" and result.status_code == 128 + 9  # the delete killed it


def test_kill_infrastructure_of_an_unknown_or_foreign_machine(fly):
    async def go():
        tpl = template(fly)
        async with FlyMachinesWorker(work_pool_name=f"fly-{uuid.uuid4().hex[:8]}", base_job_template=tpl) as worker:
            config = await FlyMachinesJobConfiguration.from_template_and_values(tpl, {})
            with pytest.raises(InfrastructureNotFound):
                await worker.kill_infrastructure(f"{APP}:0123456789abcd", config)
            with pytest.raises(InfrastructureNotAvailable):
                await worker.kill_infrastructure("another-app:0123456789abcd", config)

    asyncio.run(go())


def test_start_up_sweeps_machines_of_finished_runs(fly, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from deployments.fly_worker import worker as worker_module

    monkeypatch.setattr(worker_module, "TERMINAL_GRACE_S", 0)  # the run ended just now: no time for its hooks

    pool = f"fly-{uuid.uuid4().hex[:8]}"

    async def go():
        async with get_client() as pc:
            done = await pc.create_flow_run(probe)
            await pc.set_flow_run_state(done.id, Completed(), force=True)
            live = await pc.create_flow_run(probe)
            await pc.set_flow_run_state(live.id, Running(), force=True)
        async with FlyMachinesClient(fly.url, fly.token) as c:
            for run in (done, live):
                await c.create_machine(APP, {"config": {
                    "image": "local", "init": {"cmd": ["sleep", "60"]}, "auto_destroy": True, "restart": {"policy": "no"},
                    "metadata": {"prefect_flow_run_id": str(run.id), "prefect_work_pool": pool}}})
        await asyncio.sleep(1)
        async with FlyMachinesWorker(work_pool_name=pool, base_job_template=template(fly)):
            pass
        return done, live

    done, live = asyncio.run(go())
    assert [m.state for m in fly.by_run(str(done.id))] == ["destroyed"]
    assert [m.state for m in fly.by_run(str(live.id))] == ["started"]  # a live run keeps its Machine


def test_a_machine_whose_run_is_already_over_is_stopped(fly, monkeypatch):
    """Cancelled from the UI while its command hangs on: the worker stops the Machine itself."""
    from prefect.states import Cancelled

    from deployments.fly_worker import worker as worker_module

    monkeypatch.setattr(worker_module, "WAIT_POLL_S", 1)
    monkeypatch.setattr(worker_module, "TERMINAL_GRACE_S", 1)

    async def cancel(worker, run):
        await asyncio.sleep(2)
        await worker.client.set_flow_run_state(run.id, Cancelled(), force=True)

    result, run, _ = asyncio.run(_run(fly, "sleep 120", after_start=cancel))
    (m,) = fly.by_run(str(run.id))
    assert result.status_code == 0 and m.state == "destroyed"  # 0: Prefect has the final state already


def _cancelling_when_machine_exits(fly: FlyStandin, cancel: bool) -> str:
    """A Machine whose command exits 1 after 3 s, as Prefect's engine does when it finds its run
    Cancelling at start; `cancel` sets the run Cancelling once the Machine exists (submitted: Prefect's
    worker no longer watches the run for cancellation). The run's final state."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    async def maybe_cancel(worker, run):
        if cancel:
            await worker.client.set_flow_run_state(run.id, Cancelling(), force=True)

    async def go() -> str:
        result, run, _ = await _run(fly, "sh -c 'sleep 3; exit 1'", after_start=maybe_cancel)
        assert result.status_code == 1
        async with get_client() as pc:
            return (await pc.read_flow_run(run.id)).state.type.value

    return asyncio.run(go())


def test_a_run_cancelled_before_its_engine_started_ends_cancelled_when_its_machine_exits(fly):
    assert _cancelling_when_machine_exits(fly, cancel=True) == "CANCELLED"


def test_a_machine_exit_never_cancels_a_run_that_was_not_cancelling(fly):
    assert _cancelling_when_machine_exits(fly, cancel=False) != "CANCELLED"
