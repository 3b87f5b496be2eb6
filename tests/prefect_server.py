"""A real `prefect server start` + the project's deployments + worker(s), once per test module."""

from __future__ import annotations

import contextlib

import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deployments import stack
from deployments.deploy import deploy_all

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LocalPrefect:
    api_url: str
    home: Path
    pool: str
    logs: Path
    procs: dict = field(default_factory=dict)

    def get(self, path: str) -> dict | list:
        with urllib.request.urlopen(self.api_url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> dict | list:
        req = urllib.request.Request(self.api_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else {}

    def worker_env(self) -> dict[str, str]:
        return {"VIBEINSIGHT_HOME": str(self.home), "VIBEINSIGHT_WHISPER_MODEL": "tiny.en",
                "VIBEINSIGHT_WHISPER_CONCURRENCY": "1", "VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "0.2"}

    def add_worker(self, name: str, limit: int | None = None) -> None:
        self.procs[name] = stack.start_worker(self.api_url, self.pool, name, self.logs / f"{name}.log",
                                              self.worker_env(), limit=limit)

    def wait_run(self, flow_run_id: str, timeout_s: float = 240) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.get(f"/flow_runs/{flow_run_id}")
            if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(0.5)
        raise TimeoutError(f"flow run {flow_run_id} not finished: {run['state']}; logs in {self.logs}")

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stack.stop(proc)


def start_local_prefect(tmp: Path, db_url: str | None = None, pool: str = "vibeinsight-fly",
                        workers: int = 1, observer: bool = False) -> LocalPrefect:
    """Server (SQLite under tmp unless db_url), pool + all deployments of prefect.yaml, worker(s)."""
    port = stack.free_port()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    lp = LocalPrefect(f"http://127.0.0.1:{port}/api", home, pool, tmp / "logs")
    lp.procs["server"] = stack.start_server(tmp / "prefect-home", port, lp.logs / "server.log", db_url)
    try:
        stack.wait_healthy(lp.api_url, lp.procs["server"], timeout_s=240)
        os.environ["PREFECT_API_URL"] = lp.api_url
        deploy_all(pool=pool, pool_type="process")
        for i in range(workers):
            lp.add_worker(f"worker-{i + 1}", limit=1)
        if observer:
            lp.procs["observer"] = stack.start_observer(lp.api_url, lp.logs / "observer.log", lp.worker_env())
    except BaseException:
        lp.close()
        raise
    return lp


@contextlib.contextmanager
def local_prefect_env(tmp: Path, **kwargs):
    """start_local_prefect, with this process pointed at its API and VIBEINSIGHT_HOME, restored after."""
    from vibeinsight.settings import get_settings

    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "VIBEINSIGHT_HOME")}
    lp = start_local_prefect(tmp, **kwargs)
    os.environ["VIBEINSIGHT_HOME"] = str(lp.home)
    get_settings.cache_clear()
    try:
        yield lp
    finally:
        lp.close()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        get_settings.cache_clear()
