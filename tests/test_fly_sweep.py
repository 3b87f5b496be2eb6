"""No Machine outlives its limit: a new fly-machines worker (real Prefect API, the Fly stand-in)
checks the pool's Machines every VIBEINSIGHT_FLY_SWEEP_INTERVAL_S, not only at start-up, and stops
and deletes those a dead worker left: past the max_runtime_s in their own metadata, or whose run is
over; a Machine of a live run under its limit is kept."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import pytest
from prefect import flow

from deployments.fly_worker import FlyMachinesWorker
from deployments.fly_worker import worker as worker_module
from deployments.fly_worker.client import FlyMachinesClient
from tests.fly_standin import FlyStandin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP = "runs"


@flow(name="fly-sweep-probe")
def probe() -> None:
    pass


@pytest.fixture()
def fly(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path / "worker-home"))
    with FlyStandin(logs=tmp_path) as f:
        f.add_app(APP)
        monkeypatch.setenv("FLY_API_TOKEN", f.token)
        monkeypatch.setenv("FLY_API_URL", f.url)
        monkeypatch.setenv("FLY_LOGS_URL", f.url)
        monkeypatch.setenv("VIBEINSIGHT_FLY_SWEEP_INTERVAL_S", "1")
        yield f


def template() -> dict:
    tpl = FlyMachinesWorker.get_default_base_job_template()
    for k, v in {"app": APP, "image": "local", "cpu_kind": "shared", "cpus": 1, "memory_mb": 512}.items():
        tpl["variables"]["properties"][k]["default"] = v  # max_runtime_s keeps its 6 h: the Machines carry theirs
    return tpl


async def left_by_dead_worker(fly: FlyStandin, pool: str, run_id: str, max_runtime_s: int) -> str:
    """A Machine as a worker creates one for a run (its request body, the limit in its metadata)."""
    async with FlyMachinesClient(fly.url, fly.token) as c:
        machine = await c.create_machine(APP, {"config": {
            "image": "local", "init": {"cmd": ["sleep", "120"]}, "auto_destroy": True, "restart": {"policy": "no"},
            "metadata": {"prefect_flow_run_id": run_id, "prefect_work_pool": pool,
                         "prefect_max_runtime_s": str(max_runtime_s)}}})
    return machine["id"]


def test_a_new_worker_deletes_a_machine_past_its_max_runtime_within_one_check(fly, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    monkeypatch.setattr(worker_module, "TERMINAL_GRACE_S", 1)
    pool = f"fly-{uuid.uuid4().hex[:8]}"
    passes: list[tuple[float, float, list[str]]] = []  # (when a check began, when it ended, what it swept)

    async def go():
        async with get_client() as pc:
            runs = {}
            for label in ("overdue", "young", "ends"):
                runs[label] = await pc.create_flow_run(probe)
                await pc.set_flow_run_state(runs[label].id, Running(), force=True)
        ids = {"overdue": await left_by_dead_worker(fly, pool, str(runs["overdue"].id), max_runtime_s=3),
               "young": await left_by_dead_worker(fly, pool, str(runs["young"].id), max_runtime_s=3600),
               "ends": await left_by_dead_worker(fly, pool, str(runs["ends"].id), max_runtime_s=3600)}
        await asyncio.sleep(0.5)
        worker = FlyMachinesWorker(work_pool_name=pool, base_job_template=template())
        sweep = worker.sweep

        async def recorded() -> list[str]:
            began = time.time()
            swept = await sweep()
            passes.append((began, time.time(), swept))
            return swept

        worker.sweep = recorded
        async with worker:
            async with get_client() as pc:  # this run ends while the new worker runs: its Machine goes too
                await pc.set_flow_run_state(runs["ends"].id, Completed(), force=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and ({m.id for m in fly.live(APP)} & {ids["overdue"], ids["ends"]}):
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # one more check: the young Machine must survive it
        async with get_client() as pc:
            overdue_run = await pc.read_flow_run(runs["overdue"].id)
            young_run = await pc.read_flow_run(runs["young"].id)
        return ids, overdue_run, young_run

    ids, overdue_run, young_run = asyncio.run(go())
    overdue = fly.machines[ids["overdue"]]
    assert overdue.state == "destroyed" and fly.machines[ids["ends"]].state == "destroyed"
    # the worker's own DELETE (not the stand-in's auto_destroy), preceded by a SIGTERM stop
    assert fly.count("DELETE", f"/machines/{ids['overdue']}", 200) == 1
    assert fly.count("POST", f"/machines/{ids['overdue']}/stop", 200) == 1
    assert fly.count("DELETE", f"/machines/{ids['ends']}", 200) == 1
    # it went in one check, never before its limit, at the latest in the first check that began after it.
    # A check reads the clock per Machine, after it began: one that began just before the limit may
    # already find the Machine past it (a loaded machine stretches a check to seconds).
    limit = datetime.fromisoformat(overdue.view()["created_at"].replace("Z", "+00:00")).timestamp() + 3
    (at,) = [i for i, (_, _, swept) in enumerate(passes) if ids["overdue"] in swept]
    first_after = next(i for i, (began, _, _) in enumerate(passes) if began > limit)
    assert passes[at][1] > limit and at <= first_after
    assert at >= 1 or passes[0][1] > limit  # the start-up sweep kept it, unless it ended past the limit
    # a live run under its limit keeps its Machine through every check
    assert fly.machines[ids["young"]].state == "started" and all(ids["young"] not in s for _, _, s in passes)
    assert young_run.state.type.value == "RUNNING"
    # the overdue run is over too, and says why
    assert overdue_run.state.type.value == "CRASHED" and "max_runtime_s=3" in overdue_run.state.message
