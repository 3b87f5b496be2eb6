"""The Machines API client against the Fly stand-in (tests/fly_standin.py): pacing, 429 retries,
ambiguous creates resolved by metadata, the /wait long-poll, exit events of destroyed Machines.

No wall-clock bounds: pacing shows as no 429 from a stand-in that limits as Fly does (the bucket's
arithmetic is tested with an injected clock in test_fly_config.py), and the wait after a 429 is the
client's injected sleep, compared with the Retry-After the stand-in sent."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest

from deployments.fly_worker import client as fly_client
from deployments.fly_worker.client import FlyAPIError, FlyMachinesClient
from deployments.fly_worker.config import FlyMachinesJobConfiguration, exit_code_of
from tests.fly_standin import PERFORMANCE_PRIORITY, FlyStandin

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


class RecordedSleep:
    """The client's wait between tries: recorded, then really waited (the stand-in's bucket refills)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


async def _create_many(fly: FlyStandin, n: int, token: str | None = None,
                       sleep: RecordedSleep | None = None) -> tuple[list[dict], FlyMachinesClient]:
    async with FlyMachinesClient(fly.url, token or fly.token, retry_sleep=sleep or asyncio.sleep) as c:
        made = await asyncio.gather(*(c.create_machine(APP, body(str(uuid.uuid4()))) for _ in range(n)))
    return made, c


def test_a_burst_of_creates_is_paced_under_the_limit(fly):
    made, c = asyncio.run(_create_many(fly, 7))  # more than Fly's burst of 3
    assert len({m["id"] for m in made}) == 7
    assert fly.count("POST", "/machines", 200) == 7
    assert fly.count("POST", "/machines", 429) == 0 and c.stats.throttled == 0  # paced: Fly never said slow down


def test_429s_are_retried_after_retry_after_until_every_create_lands(fly, monkeypatch):
    monkeypatch.setattr(fly_client, "DEFAULT_RATE", (100.0, 100))  # a client that does not pace
    sleep = RecordedSleep()
    made, c = asyncio.run(_create_many(fly, 6, sleep=sleep))
    assert len(made) == 6 and len(fly.machines) == 6  # each run one Machine
    throttled = fly.calls("POST", "/machines", 429)
    assert len(throttled) >= 2 and c.stats.throttled == len(throttled)
    # each 429 was waited out for exactly the Retry-After it carried (the fallback back-off is random
    # and mostly under a second)
    assert sorted(sleep.waits) == sorted(float(t.headers["Retry-After"]) for t in throttled)
    assert min(sleep.waits) >= 1.0


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


def test_the_workers_machine_runs_a_failing_command_once_then_is_destroyed(fly):
    """The body the worker builds (restart "no" + auto_destroy): a crashed run is not re-executed."""
    run_id = str(uuid.uuid4())
    config = FlyMachinesJobConfiguration(app=APP, image="local", cpu_kind="shared", cpus=1, memory_mb=256,
                                         command="sh -c 'exit 1'")
    request = config.machine_request(run_id)

    async def go():
        async with FlyMachinesClient(fly.url, fly.token) as c:
            m = await c.create_machine(APP, request)
            # event order, not a sleep: Fly answers the wait for "destroyed" once the Machine is gone
            for _ in range(12):
                try:
                    if await c.wait(APP, m["id"], "destroyed", timeout_s=10):
                        break
                except fly_client.MachineNotFound:  # Fly may say 404 for a Machine already gone
                    break
            return await c.get_machine(APP, m["id"])

    after = asyncio.run(go())
    assert after["config"]["restart"] == {"policy": "no"} and after["config"]["auto_destroy"] is True
    assert after["state"] == "destroyed"
    assert [e["type"] for e in after["events"]].count("exit") == 1 and exit_code_of(after) == 1


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


# A Machine reports the cores it and a child of it may run on, and the engine's count, then idles
# until stopped (so Machines overlap without a timed wait).
SEES = ("import json, os, subprocess, sys, time; from vibeinsight.cores import usable_cores; "
        "child = subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'], "
        "capture_output=True, text=True).stdout.strip(); "
        "print('SEES ' + json.dumps({'own': sorted(os.sched_getaffinity(0)), 'child': json.loads(child), "
        "'usable': usable_cores(), 'nice': os.nice(0)}), flush=True); time.sleep(120)")


def test_each_machine_runs_on_its_guest_cpus_and_concurrent_machines_on_distinct_cores(fly):
    if len(fly.host_cores) < 2:
        pytest.skip("needs a host with two cores")
    cpus = [1, 1, 2]
    kinds = ["shared", "performance", "performance"]

    async def go():
        async with FlyMachinesClient(fly.url, fly.token) as c:
            made = [await c.create_machine(APP, body(str(uuid.uuid4()), ["python", "-c", SEES],
                                                     guest={"cpu_kind": kind, "cpus": n,
                                                            "memory_mb": (2048 if kind == "performance" else 256) * n}))
                    for n, kind in zip(cpus, kinds, strict=True)]
            seen: dict[str, dict] = {}
            for _ in range(600):  # until each has printed (no wall-clock bound: a count of polls)
                for m in made:
                    log = fly.logs / f"{m['id']}.log"
                    line = next((x for x in (log.read_text().splitlines() if log.exists() else [])
                                 if x.startswith("SEES ")), None)
                    if line:
                        seen[m["id"]] = json.loads(line[5:])
                if len(seen) == len(made):
                    break
                await asyncio.sleep(0.1)
            held = {m["id"]: fly.machines[m["id"]].cores for m in made}
            for m in made:
                await c.delete_machine(APP, m["id"], force=True)
            for _ in range(600):  # the reaper frees a Machine's cores once its process is gone
                if not any(fly.core_use.values()):
                    break
                await asyncio.sleep(0.1)
            return made, seen, held

    made, seen, held = asyncio.run(go())
    one_a, one_b, two = (seen[m["id"]] for m in made)
    for s, n in zip((one_a, one_b, two), cpus, strict=True):
        assert len(s["own"]) == n and s["child"] == s["own"] and s["usable"] == n, s  # children inherit it
    assert set(one_a["own"]).isdisjoint(one_b["own"])  # the two 1-cpu Machines got different cores
    assert [held[m["id"]] for m in made] == [tuple(s["own"]) for s in (one_a, one_b, two)]
    assert not any(fly.core_use.values())  # cores are free again once the Machines are gone
    # performance vCPUs are dedicated: their processes come before the host's (which root can arrange)
    host, ahead = os.nice(0), (PERFORMANCE_PRIORITY if os.geteuid() == 0 else 0)
    assert [s["nice"] for s in (one_a, one_b, two)] == [host, host - ahead, host - ahead]
