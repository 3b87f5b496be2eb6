"""The production shape on one machine, for the end-to-end test and bench/fly_burst.py: a real
`prefect server start` (on PostgreSQL), the deployments from `prefect deploy --all`, SeaweedFS as
the bucket, the OpenAI stand-in, PostgreSQL for processing_status and usage_events, the status
observer, and either

- mode "fly": the Fly Machines stand-in with the runs app and its secrets, and one `prefect worker
  start --pool vibeinsight-fly` (the fly-machines type, found through the entry point), whose own
  environment holds no app secret: each run Machine gets those from the stand-in, as from Fly; or
- mode "process": the pool as a `process` pool and N process workers (`--limit`) that carry the
  secrets in their own environment, as the always-on Machines of the old set-up did.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deployments import stack
from deployments.deploy import OPS_POOL, OPS_POOL_TYPE, ensure_api_limit, ensure_pool
from deployments.fly_worker import FlyMachinesWorker
from tests.fake_openai import FakeOpenAI
from tests.fly_s3 import S3, seaweed_s3
from tests.fly_standin import PERFORMANCE_PRIORITY, FlyStandin
from tests.pg import create_database, drop_database
from tests.prefect_server import drop_prefect_database, new_prefect_database, start_seeded_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "vibeinsight-fly"
RUNS_APP = "vibeinsight-runs"
AUDIO = ROOT / "tests" / "data" / "jfk.flac"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def base_env(home: Path, api_url: str) -> dict[str, str]:
    """What any process here starts from: no VIBEINSIGHT_* and no keys from this shell."""
    return {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}


@dataclass
class FlyStack:
    tmp: Path
    mode: str
    api_url: str
    s3: S3
    openai: FakeOpenAI
    status_url: str
    secrets: dict[str, str]
    fly: FlyStandin | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.tmp / "logs"

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.api_url + path, method=method, headers={"Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else {}

    def upload(self, key: str, path: Path = AUDIO) -> str:
        self.s3.block().upload_file(path, key, "audio/flac")
        return f"s3://{self.s3.bucket_name}/{key}"

    def trigger(self, n: int) -> list[tuple[str, str]]:
        """n sessions as the Edge Function starts them: (session_id, flow_run_id) each."""
        import psycopg

        from deployments.trigger import trigger

        users = [str(uuid.uuid4()) for _ in range(n)]  # each upload under its owner's prefix, as the flow requires
        with psycopg.connect(self.status_url, autocommit=True) as conn:  # owners are Supabase Auth users
            for user in users:
                conn.execute("INSERT INTO auth.users (id) VALUES (%s)", (user,))
        sources = [self.upload(f"uploads/{user}/call.flac") for user in users]
        return [(t.session_id, t.flow_run_id) for t in
                (trigger(src, user_id=user, language="en", api_url=self.api_url)
                 for src, user in zip(sources, users, strict=True))]

    def states(self, run_ids: list[str]) -> dict[str, str | None]:
        runs = self.api("POST", "/flow_runs/filter", {"flow_runs": {"id": {"any_": run_ids}}, "limit": 200})
        return {r["id"]: (r["state"] or {}).get("type") for r in runs}

    def wait_runs(self, run_ids: list[str], timeout_s: float = 600, want=TERMINAL) -> dict[str, tuple[str, float]]:
        """Until every run is in one of `want`: {run_id: (state, seconds from now to when it was seen)}."""
        start = time.monotonic()
        seen: dict[str, tuple[str, float]] = {}
        while len(seen) < len(run_ids):
            for rid, state in self.states([r for r in run_ids if r not in seen]).items():
                if state in want:
                    seen[rid] = (state, time.monotonic() - start)
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"runs not finished after {timeout_s:.0f} s: "
                                   f"{self.states([r for r in run_ids if r not in seen])}; logs in {self.logs}")
            time.sleep(0.3)
        return seen

    def row(self, session_id: str, want: set[str], timeout_s: float = 60):
        from blocks.status_store import PostgresStatusStore

        store = PostgresStatusStore(url=self.status_url)
        deadline = time.monotonic() + timeout_s
        r = None
        while time.monotonic() < deadline:
            r = store.get(session_id)
            if r is not None and r.status.value in want:
                return r
            time.sleep(0.3)
        raise AssertionError(f"status row of {session_id}: {r}")

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stack.stop(proc)


def pool_template(fly: FlyStandin) -> dict:
    """The default fly-machines template, edited as an operator would for this machine: the local
    image, a small shared guest (the stand-in's URL is the worker's FLY_API_URL, not a variable)."""
    tpl = FlyMachinesWorker.get_default_base_job_template()
    for key, value in {"image": "local", "cpu_kind": "shared", "cpus": 1, "memory_mb": 1024}.items():
        tpl["variables"]["properties"][key]["default"] = value
    return tpl


def _prefect(*args: str, env: dict[str, str], cwd: Path = ROOT) -> str:
    done = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def fly_stack(tmp: Path, mode: str = "fly", process_workers: int = 2, process_limit: int = 2,
              performance_nice: int = PERFORMANCE_PRIORITY) -> Iterator[FlyStack]:
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "VIBEINSIGHT_STATUS_URL", "VIBEINSIGHT_HOME")}
    status_url = create_database()
    prefect_db = new_prefect_database()
    port = stack.free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    fs: FlyStack | None = None
    server: subprocess.Popen | None = None
    try:
        server = start_seeded_server(tmp / "prefect-server", port, logs / "server.log", prefect_db)
        with seaweed_s3(tmp / "seaweed") as s3, FakeOpenAI(script=["And so my fellow Americans"], language="en") as oa:
            # The runs app's secrets (production: `fly secrets set -a vibeinsight-runs …`).
            secrets = {"PREFECT_API_URL": api_url, **s3.env(), "OPENAI_API_KEY": "sk-test",
                       "OPENAI_BASE_URL": oa.url + "/v1", "VIBEINSIGHT_STATUS_URL": status_url,
                       "VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "0.2", "VIBEINSIGHT_OPENAI_CHUNK_S": "60"}
            fs = FlyStack(tmp, mode, api_url, s3, oa, status_url, secrets)
            fs.procs["server"] = server
            stack.wait_healthy(api_url, server, timeout_s=240)
            # This process triggers runs and reads rows as the Edge Function and clients would.
            os.environ.update(PREFECT_API_URL=api_url, VIBEINSIGHT_STATUS_URL=status_url,
                              VIBEINSIGHT_HOME=str(tmp / "trigger-home"))
            from vibeinsight.settings import get_settings

            get_settings.cache_clear()
            env = base_env(tmp / "deployer-home", api_url)
            (tmp / "deployer-home").mkdir()
            if mode == "fly":
                (logs / "machines").mkdir(exist_ok=True)
                fs.fly = FlyStandin(logs=logs / "machines", performance_nice=performance_nice).__enter__()
                fs.fly.add_app(RUNS_APP, secrets)
                ensure_pool(POOL, "fly-machines", pool_template(fs.fly))
            else:
                ensure_pool(POOL, "process")
            # The operators' flows' pool (reconcile, quota report: process workers on the worker app).
            ensure_pool(OPS_POOL, OPS_POOL_TYPE)
            # Prefect's own command, from the project root, with nothing exported but the API URL.
            _prefect("deploy", "--all", env=env)
            ensure_api_limit()
            # Only the runs a test or the benchmark starts: the report and reconcile schedules wait.
            for dep in fs.api("POST", "/deployments/filter", {}):
                if dep["name"] != "api":
                    fs.api("PATCH", f"/deployments/{dep['id']}", {"paused": True})
            if mode == "fly":
                (tmp / "worker-home").mkdir()
                worker_env = {**base_env(tmp / "worker-home", api_url), "FLY_API_TOKEN": fs.fly.token,
                              "FLY_API_URL": fs.fly.url, "FLY_LOGS_URL": fs.fly.url,
                              "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
                fs.procs["worker"] = _spawn([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", "fly-1"],
                                            worker_env, logs / "worker.log", cwd=tmp / "worker-home")
            else:
                for i in range(process_workers):
                    home = tmp / f"worker-{i + 1}-home"
                    home.mkdir()
                    worker_env = {**base_env(home, api_url), **secrets, "PREFECT_WORKER_QUERY_SECONDS": "1"}
                    fs.procs[f"worker-{i + 1}"] = _spawn(
                        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                         "--name", f"process-{i + 1}", "--limit", str(process_limit)],
                        worker_env, logs / f"worker-{i + 1}.log", cwd=ROOT)
            fs.procs["observer"] = _spawn([sys.executable, "-m", "deployments.status_observer"],
                                          {**base_env(tmp / "deployer-home", api_url),
                                           "VIBEINSIGHT_STATUS_URL": status_url}, logs / "observer.log", cwd=ROOT)
            try:
                yield fs
            finally:
                fs.close()
                if fs.fly is not None:
                    fs.fly.__exit__(None, None, None)
    finally:
        if fs is None and server is not None:
            stack.stop(server)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        drop_database(status_url)
        drop_prefect_database(prefect_db)


def _spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
