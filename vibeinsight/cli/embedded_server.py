"""Prefect's embedded API server, started early so its start-up overlaps ours.

Prefect starts the same server (uvicorn on prefect.server.api.server:create_app, UI
off, ephemeral flags) lazily on the first flow call, after the client has imported
the whole server package itself; here the subprocess is spawned before the client
imports Prefect at all, while imports, model loading and probing run beside it.
Its output goes to a log file, so shutdown noise never reaches the terminal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def configure_prefect_env(home: Path) -> None:
    """Settings for the embedded mode; anything the user set explicitly wins."""
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    if migrated_marker().is_file() and migrated_marker().read_text() == _prefect_version():
        # The database is at this Prefect version's schema: skip the migration check.
        os.environ.setdefault("PREFECT_SERVER_DATABASE_MIGRATE_ON_START", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Block types are registered once by `vibeinsight setup`; re-checking them costs start-up time.
    os.environ.setdefault("PREFECT_SERVER_REGISTER_BLOCKS_ON_START", "false")


def migrated_marker() -> Path:
    return Path(os.environ["PREFECT_HOME"]) / "vibeinsight-migrated"


def _prefect_version() -> str:
    from importlib.metadata import version  # cheap: reads dist-info, imports nothing

    return version("prefect")


def mark_migrated() -> None:
    """Called once a server with migrations on has started: later starts may skip them."""
    migrated_marker().write_text(_prefect_version())


class EmbeddedServer:
    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to us; we stop the server ourselves
            preexec_fn=_die_with_parent,
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded Prefect server exited ({self.process.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self.api_url
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the embedded Prefect server did not start in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        _drain_prefect_clients()  # send queued logs and events while the server is still up
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _drain_prefect_clients() -> None:
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=5)
        except Exception:  # noqa: BLE001 - shutting down; nothing left to tell
            pass


def _die_with_parent() -> None:
    """Linux: SIGTERM the server when the CLI dies, even by SIGKILL, so none is left orphaned."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
