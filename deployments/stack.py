"""The local stack as production runs it, on one machine: a Prefect server (PostgreSQL or
SQLite), the work pool and deployments, worker(s) on the pool, and the status observer.

Used by `vibeinsight stack up|down|status` and by the deploy tests. Processes are started in
their own sessions with their pids in `<VIBEINSIGHT_HOME>/stack/pids.json`, so `down` stops
exactly those (by pid, process group), nothing found by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from vibeinsight import logs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(prefect_home: Path, port: int, db_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    if db_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = db_url
    return env


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def start_server(prefect_home: Path, port: int, log: Path, db_url: str | None = None,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**server_env(prefect_home, port, db_url), **(extra_env or {})}
    return _spawn([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log)


def wait_healthy(api_url: str, proc: subprocess.Popen | None = None, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout_s:.0f} s")


def start_worker(api_url: str, pool: str, name: str, log: Path, extra_env: dict[str, str] | None = None,
                 limit: int | None = None) -> subprocess.Popen:
    """A process worker on the pool, polling every 2 s (fast pick-up; Prefect's default is 10 s)."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(extra_env or {})}
    env.update(logs.prefect_env(env.get("LOG_LEVEL")))  # the worker and its flow runs log as ours do (LOG_FORMAT)
    # the pool's runs start `python -m prefect.engine` (deployments/deploy.py): this venv's python
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    if limit:
        cmd += ["--limit", str(limit)]
    return _spawn(cmd, env, log)


def start_observer(api_url: str, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, **(extra_env or {})}
    return _spawn([sys.executable, "-m", "deployments.status_observer"], env, log)


def stop(proc_or_pid: subprocess.Popen | int, timeout_s: float = 20) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left."""
    pid = proc_or_pid.pid if isinstance(proc_or_pid, subprocess.Popen) else proc_or_pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if isinstance(proc_or_pid, subprocess.Popen):
            if proc_or_pid.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if isinstance(proc_or_pid, subprocess.Popen):
        proc_or_pid.wait(5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by anyone here) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class StackState:
    api_url: str
    pids: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def path(home: Path) -> Path:
        return home / "stack" / "pids.json"

    def save(self, home: Path) -> None:
        self.path(home).parent.mkdir(parents=True, exist_ok=True)
        self.path(home).write_text(json.dumps({"api_url": self.api_url, "pids": self.pids}))

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        p = cls.path(home)
        return cls(**json.loads(p.read_text())) if p.is_file() else None

    def alive(self) -> dict[str, bool]:
        return {name: _alive(pid) for name, pid in self.pids.items()}


def stack_up(home: Path, port: int = 4200, db_url: str | None = None, workers: int = 1,
             pool: str | None = None, observer: bool = True) -> StackState:
    """Server, pool, deployments (process-audio at least), worker(s) and observer, in that order."""
    from deployments.deploy import deploy_all, pool_name

    existing = StackState.load(home)
    if existing and any(existing.alive().values()):
        raise RuntimeError(f"a stack is already up under {home} ({existing.api_url}); run `vibeinsight stack down`")
    pool = pool or pool_name()
    logs = home / "stack"
    api_url = f"http://127.0.0.1:{port}/api"
    state = StackState(api_url)
    server = start_server(home / "prefect-server", port, logs / "server.log", db_url)
    state.pids["server"] = server.pid
    state.save(home)
    try:
        wait_healthy(api_url, server)
        os.environ["PREFECT_API_URL"] = api_url
        deploy_all(pool=pool, pool_type="process")  # local process workers run the same deployments
        env = {"VIBEINSIGHT_HOME": str(home)}
        for i in range(workers):
            state.pids[f"worker-{i + 1}"] = start_worker(api_url, pool, f"local-{i + 1}", logs / f"worker-{i + 1}.log",
                                                         env).pid
        if observer:
            state.pids["observer"] = start_observer(api_url, logs / "observer.log", env).pid
    except BaseException:
        stack_down(home, state)
        raise
    state.save(home)
    return state


def stack_down(home: Path, state: StackState | None = None) -> list[str]:
    state = state or StackState.load(home)
    if state is None:
        return []
    stopped = []
    for name, pid in reversed(list(state.pids.items())):  # workers before the server they talk to
        if _alive(pid):
            stop(pid)
            stopped.append(name)
    StackState.path(home).unlink(missing_ok=True)
    return stopped
