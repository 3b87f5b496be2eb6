"""The Machines API client against the Fly stand-in (tests/fly_standin.py): pacing, 429 retries,
ambiguous creates resolved by metadata, the /wait long-poll, exit events of destroyed Machines."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from deployments.fly_worker import client as fly_client
from deployments.fly_worker.client import FlyAPIError, FlyMachinesClient
from deployments.fly_worker.config import exit_code_of
from tests.fly_standin import FlyStandin

pytestmark = pytest.mark.integration

APP = "runs"


@pytest.fixture()
def fly(tmp_path):
    with FlyStandin(logs=tmp_path) as f:
        f.add_app(APP, {"SECRET_FROM_FLY": "s3cret"})
        yield f


def body(run_id: str, cmd: list[str] | None = None, **config) -> dict:
    return {"name": f"t-{run_id[:8]}", "region": "nrt", "config": {
        "image": "local", "init": {"cmd": cmd or ["true"]}, "env": {"RUN": run_id},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}, "auto_destroy": True,
        "restart": {"policy": "no"}, "metadata": {"prefect_flow_run_id": run_id}, **config}}


async def _create_many(fly: FlyStandin, n: int, token: str | None = None) -> tuple[list[dict], FlyMachinesClient]:
    async with FlyMachinesClient(fly.url, token or fly.token) as c:
        made = await asyncio.gather(*(c.create_machine(APP, body(str(uuid.uuid4()))) for _ in range(n)))
    return made, c


def test_a_burst_of_creates_is_paced_under_the_limit(fly):
    start = time.monotonic()
    made, c = asyncio.run(_create_many(fly, 7))
    took = time.monotonic() - start
    assert len({m["id"] for m in made}) == 7
    assert fly.count("POST", "/machines", 429) == 0 and c.stats.throttled == 0
    assert took >= 4.5  # burst 2 (one short of Fly's 3), then 1/s
    times = fly.create_times()
    assert times[-1] - times[0] >= (7 - 2) * 0.9  # then one a second on average


def test_429s_are_retried_until_every_create_lands(fly, monkeypatch):
    monkeypatch.setattr(fly_client, "DEFAULT_RATE", (100.0, 100))  # a client that does not pace
    made, c = asyncio.run(_create_many(fly, 6))
    assert len(made) == 6 and len(fly.machines) == 6  # each run one Machine
    assert fly.count("POST", "/machines", 429) >= 2 and c.stats.throttled == fly.count("POST", "/machines", 429)


def test_an_ambiguous_create_adopts_the_machine_it_made(fly):
    fly.ambiguous_creates = 1
    run_id = str(uuid.uuid4())

    async def go():
        async with FlyMachinesClient(fly.url, fly.token) as c:
            return await c.create_machine(APP, body(run_id)), c

    m, c = asyncio.run(go())
    assert [x.id for x in fly.by_run(run_id)] == [m["id"]]  # never two Machines for one run
    assert fly.count("POST", "/machines", 504) == 1 and c.stats.adopted == 1
    assert fly.count("GET", f"/apps/{APP}/machines") >= 1


def test_a_5xx_before_anything_was_made_is_retried(fly):
    fly.fail_creates = 2
    run_id = str(uuid.uuid4())

    async def go():
        async with FlyMachinesClient(fly.url, fly.token) as c:
            return await c.create_machine(APP, body(run_id))

    m = asyncio.run(go())
    assert [x.id for x in fly.by_run(run_id)] == [m["id"]]
    assert fly.count("POST", "/machines", 503) == 2


def test_wait_answers_408_then_the_exit_event_of_a_destroyed_machine(fly):
    run_id = str(uuid.uuid4())

    async def go():
        async with FlyMachinesClient(fly.url, fly.token) as c:
            m = await c.create_machine(APP, body(run_id, ["sh", "-c", 'sleep 2; test "$SECRET_FROM_FLY" = s3cret && exit 7']))
            first = await c.wait(APP, m["id"], "stopped", m["instance_id"], timeout_s=1)
            for _ in range(10):
                try:
                    if await c.wait(APP, m["id"], "stopped", m["instance_id"], timeout_s=5):
                        break
                except fly_client.MachineNotFound:
                    break
            await asyncio.sleep(0.2)
            return first, await c.get_machine(APP, m["id"])

    first, after = asyncio.run(go())
    assert first is False and fly.count("GET", "/wait", 408) >= 1
    assert after["state"] == "destroyed"  # auto_destroy; GET still answers
    assert [e["type"] for e in after["events"]][:2] == ["destroy", "exit"]  # newest first
    assert exit_code_of(after) == 7  # and the app's secret reached the process


def test_restart_policy_no_runs_a_failing_command_once(fly):
    run_id = str(uuid.uuid4())

    async def go(policy):
        async with FlyMachinesClient(fly.url, fly.token) as c:
            m = await c.create_machine(APP, body(run_id, ["sh", "-c", "exit 1"], restart={"policy": policy, "max_retries": 2}))
            await asyncio.sleep(2.5)
            return await c.get_machine(APP, m["id"])

    assert sum(e["type"] == "exit" for e in asyncio.run(go("no"))["events"]) == 1
    assert sum(e["type"] == "exit" for e in asyncio.run(go("on-failure"))["events"]) == 3  # what the worker avoids


def test_stop_then_forced_delete(fly):
    run_id = str(uuid.uuid4())

    async def go():
        async with FlyMachinesClient(fly.url, fly.token) as c:
            m = await c.create_machine(APP, body(run_id, ["sleep", "60"], auto_destroy=False))
            await c.wait(APP, m["id"], "started")
            with pytest.raises(FlyAPIError) as refused:
                await c.delete_machine(APP, m["id"], force=False)
            await c.stop_machine(APP, m["id"], "SIGTERM", 5)
            assert await c.wait(APP, m["id"], "stopped", m["instance_id"], timeout_s=10)
            await c.delete_machine(APP, m["id"], force=True)
            return refused.value.status, await c.get_machine(APP, m["id"]), await c.list_machines(APP)

    status, gone, listed = asyncio.run(go())
    assert status == 412
    ev = next(e for e in gone["events"] if e["type"] == "exit")["request"]["exit_event"]
    assert ev["requested_stop"] is True and ev["exit_code"] == 128 + 15  # SIGTERM
    assert gone["state"] == "destroyed" and listed == []


def test_a_wrong_token_is_refused(fly):
    with pytest.raises(FlyAPIError) as err:
        asyncio.run(_create_many(fly, 1, token="not-the-token"))
    assert err.value.status == 401
