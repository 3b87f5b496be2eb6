"""The one helper for a real `prefect server start` in tests (and bench/): deployments/stack.py's
start_server + wait_healthy, on SQLite or a PostgreSQL URL (`prefect_database()` makes a fresh
one), optionally with the project's work pool and deployments (prefect.yaml), worker(s), the
status observer and any other process; `LocalPrefect` is also the REST client for a server
someone else started (`vibeinsight stack up`).

`local_prefect(tmp, ...)` is the context manager tests use: it also points this process at the
server (PREFECT_API_URL in the environment and in Prefect's settings, VIBEINSIGHT_HOME, `here`)
and restores everything after. The in-process flow tests use Prefect's own harness instead
(the `prefect_harness` fixture in conftest.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from importlib.metadata import distributions, version
from pathlib import Path

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from deployments import stack
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
PG = "postgres@127.0.0.1:5432"  # the machine's PostgreSQL (bin/test starts it)


# A Prefect server on an empty database spends ~8 of its ~17 CPU-seconds of start-up migrating it, and
# the suite starts more than a dozen: each gets a copy of a database migrated once per machine and
# Prefect version instead (Prefect still checks it is at head when it starts). The copy also holds the
# block types Prefect registers at a server's start (its own, the installed collections', ours), so
# servers on a copy skip that step (SEEDED_SERVER_ENV): ~3.5 of a start's ~8 CPU-seconds here. The
# registry follows the installed packages, so their names and versions are part of the template's key.
PREFECT_VERSION = version("prefect")


@functools.cache
def _template_key() -> str:
    """Prefect's version and a digest of the installed packages: read on first use, not at every import
    of this module (scanning the installed distributions takes ~0.3 s)."""
    packages = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()})
    return f"{PREFECT_VERSION}-{hashlib.sha256(' '.join(packages).encode()).hexdigest()[:10]}"


def _template_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"vibeinsight-prefect-db-{_template_key()}"


def _pg_template() -> str:
    return "prefect_template_" + re.sub(r"\W", "_", _template_key())


SEEDED_SERVER_ENV = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
                     "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}

# What a server's start does to register block types (prefect.server.api.server.create_app's
# add_block_types), run once on the template.
_REGISTER_BLOCKS = """
import asyncio
import prefect.plugins
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

async def main():
    prefect.plugins.load_prefect_collections()  # as the server does first: the collections' block types
    session = await provide_database_interface().session()
    async with session:
        await run_block_auto_registration(session=session)

asyncio.run(main())
"""


def _prepare(db_url: str) -> None:
    """Prefect's migrations (`prefect server database upgrade`) and block registration on db_url, in a
    throwaway PREFECT_HOME."""
    with tempfile.TemporaryDirectory() as home:
        env = stack.server_env(Path(home), stack.free_port(), db_url)
        for args in ([str(stack.BIN / "prefect"), "server", "database", "upgrade", "-y"],
                     [str(stack.BIN / "python"), "-c", _REGISTER_BLOCKS]):
            subprocess.run(args, check=True, env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)


def start_seeded_server(prefect_home: Path, port: int, log: Path, db_url: str | None = None) -> subprocess.Popen:
    """`prefect server start` on a copy of the template (seed_sqlite into prefect_home, or a database from
    new_prefect_database()): block types are in place already."""
    return stack.start_server(prefect_home, port, log, db_url, extra_env=SEEDED_SERVER_ENV)


@contextlib.contextmanager
def _machine_lock():
    """One builder of the templates at a time, across xdist workers and parallel runs."""
    _template_dir().mkdir(parents=True, exist_ok=True)
    with (_template_dir() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def seed_sqlite(prefect_home: Path, name: str = "prefect.db") -> None:
    """Put a migrated copy of Prefect's SQLite database where a server with this PREFECT_HOME reads it
    (or as `name` in that folder)."""
    template = _template_dir() / "prefect.db"
    with _machine_lock():
        if not template.is_file():
            with tempfile.TemporaryDirectory(dir=_template_dir()) as build:
                _prepare(f"sqlite+aiosqlite:///{build}/prefect.db")
                os.replace(f"{build}/prefect.db", template)  # whole or absent, never half-built
    prefect_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, prefect_home / name)


def new_prefect_database() -> str:
    """A new PostgreSQL database for a Prefect server, copied from a migrated template; its asyncpg URL."""
    import psycopg

    name = f"prefect_test_{uuid.uuid4().hex[:8]}"
    template = _pg_template()
    with _machine_lock(), psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
        if not c.execute("select 1 from pg_database where datname = %s", (template,)).fetchone():
            building = f"{template}_building"
            c.execute(f'drop database if exists "{building}" with (force)')
            c.execute(f'create database "{building}"')
            _prepare(f"postgresql+asyncpg://{PG}/{building}")
            c.execute(f'alter database "{building}" rename to "{template}"')
        c.execute(f'create database "{name}" template "{template}"')
    return f"postgresql+asyncpg://{PG}/{name}"


def drop_prefect_database(db_url: str) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
        c.execute(f'drop database if exists "{db_url.rsplit("/", 1)[1]}" with (force)')


@contextlib.contextmanager
def prefect_database():
    """A fresh PostgreSQL database for a Prefect server (Prefect's schema in place); yields its
    SQLAlchemy URL, drops it after."""
    url = new_prefect_database()
    try:
        yield url
    finally:
        drop_prefect_database(url)


def psycopg_url(db_url: str) -> str:
    """The psycopg URL of a Prefect database URL (postgresql+asyncpg://…)."""
    return db_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass
class LocalPrefect:
    api_url: str
    home: Path  # VIBEINSIGHT_HOME of the workers (bucket, status db)
    logs: Path
    pool: str
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every process but the server
    db_url: str | None = None  # None: SQLite under the server's PREFECT_HOME
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # --- the REST API ---

    def get(self, path: str) -> dict | list:
        return self._call(urllib.request.Request(self.api_url + path))

    def post(self, path: str, body: dict) -> dict | list:
        return self._call(urllib.request.Request(self.api_url + path, data=json.dumps(body).encode(), method="POST",
                                                 headers={"Content-Type": "application/json"}))

    # The server answers 503 while its database is busy (a loaded machine) and 429 when it sheds load:
    # retried as Prefect's own client retries them.
    @retry(retry=retry_if_exception(lambda e: isinstance(e, urllib.error.HTTPError) and e.code in (429, 503)),
           wait=wait_exponential(multiplier=0.5, max=8), stop=stop_after_attempt(6), reraise=True)
    def _call(self, req: urllib.request.Request) -> dict | list:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else {}

    def wait_run(self, flow_run_id: str, timeout_s: float = 240) -> dict:
        """The flow run once it is in a terminal state."""
        def finished():
            run = self.get(f"/flow_runs/{flow_run_id}")
            return run if run["state"] and run["state"]["type"] in TERMINAL else None

        return wait_for(finished, timeout_s, 0.5, f"flow run {flow_run_id} to finish (logs in {self.logs})")

    # --- processes ---

    def process_env(self, **extra: str) -> dict[str, str]:
        """What the processes started here get on top of this process's environment."""
        return {"VIBEINSIGHT_HOME": str(self.home), **self.env, **extra}

    def add_worker(self, name: str, limit: int | None = 1) -> subprocess.Popen:
        self.procs[name] = stack.start_worker(self.api_url, self.pool, name, self.logs / f"{name}.log",
                                              self.process_env(), limit=limit)
        return self.procs[name]

    def add_observer(self, **extra_env: str) -> subprocess.Popen:
        self.procs["observer"] = stack.start_observer(self.api_url, self.logs / "observer.log",
                                                      self.process_env(**extra_env))
        return self.procs["observer"]

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Any other process beside the stack (its own session, output in logs/<name>.log), stopped by close()."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):  # workers and observer before the server
            stack.stop(proc)


def start_local_prefect(tmp: Path, db_url: str | None = None, *, deploy: bool = True, pool: str = "vibeinsight-fly",
                        workers: int = 0, observer: bool = False, env: dict[str, str] | None = None) -> LocalPrefect:
    """A server (on a copy of the template: SQLite under tmp, or db_url from prefect_database()), then when `deploy` the
    pool and every deployment of prefect.yaml, `workers` workers on it and the observer if asked.

    `env` is added to the environment of the workers, the observer and spawn()ed processes.
    Sets PREFECT_API_URL in os.environ (deploy_all reads it); local_prefect() restores it.
    """
    port = stack.free_port()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    lp = LocalPrefect(f"http://127.0.0.1:{port}/api", home, tmp / "logs", pool, dict(env or {}), db_url)
    if db_url is None:
        seed_sqlite(tmp / "prefect-home")
    lp.procs["server"] = start_seeded_server(tmp / "prefect-home", port, lp.logs / "server.log", db_url)
    try:
        stack.wait_healthy(lp.api_url, lp.procs["server"], timeout_s=240)
        os.environ["PREFECT_API_URL"] = lp.api_url
        if deploy:
            from deployments.deploy import deploy_all

            deploy_all(pool=pool, pool_type="process")
        for i in range(workers):
            lp.add_worker(f"worker-{i + 1}")
        if observer:
            lp.add_observer()
    except BaseException:
        lp.close()
        raise
    return lp


def status_row(session_id: str, want: set[str], timeout_s: float = 60):
    """The session's status row (as this process's settings find it) once it reaches one of `want`;
    the terminal write may trail the run's state by a moment."""
    from blocks import registry

    def reached():
        r = registry.status_store().get(session_id)
        return r if r is not None and r.status.value in want else None

    return wait_for(reached, timeout_s, 0.3, f"the status row of {session_id} to reach {sorted(want)}")


# What the deploy tests' workers use: the small English model, one chunk at a time, quick status writes,
# no speaker embeddings (~0.7 CPU-s a run: these stacks test orchestration; test_flow_speakers and the
# fan-out e2e test the speakers).
FAST_WORKERS = {"VIBEINSIGHT_WHISPER_MODEL": "tiny.en", "VIBEINSIGHT_WHISPER_CONCURRENCY": "1",
                "VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "0.2", "VIBEINSIGHT_DIARIZE": "off"}


def drain_prefect_services(timeout_s: float) -> None:
    """Drain Prefect's log and event senders with a bound, so that the next use starts new ones bound to
    the API in force then. Prefect's harness drains them at its end without a bound, and a sender still
    retrying a server that a test had stopped hung a worker's teardown for 10 minutes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout_s)


@contextlib.contextmanager
def local_prefect(tmp: Path, db_url: str | None = None, *, here: dict[str, str] | None = None, **kwargs):
    """start_local_prefect, with this process pointed at it (PREFECT_API_URL in the environment and in
    Prefect's settings, VIBEINSIGHT_HOME = the workers' home, and `here`), all restored after."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from vibeinsight.settings import get_settings

    here = dict(here or {})
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "VIBEINSIGHT_HOME", *here)}
    try:
        lp = start_local_prefect(tmp, db_url, **kwargs)
        os.environ.update(VIBEINSIGHT_HOME=str(lp.home), **here)
        get_settings.cache_clear()
        try:
            # Prefect's event sender is one per process whatever the API (its key holds no URL), bound to the
            # server it first sent to: drained here, and again before this server stops, the events of this
            # process's in-process runs go to the server they ran against, and no sender is left bound to a
            # stopped one (a later test's events then queued behind 113 that each took a minute to fail)
            drain_prefect_services(timeout_s=60)
            # Prefect read its settings at import: in-process clients need the API set there too
            with temporary_settings(updates={PREFECT_API_URL: lp.api_url}):
                try:
                    yield lp
                finally:
                    drain_prefect_services(timeout_s=60)
        finally:
            lp.close()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        get_settings.cache_clear()


def deployment_ready(name: str) -> bool:
    """Whether the Prefect API (this process's PREFECT_API_URL) knows the deployment `flow/name` yet."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            try:
                await client.read_deployment_by_name(name)
                return True
            except Exception:  # noqa: BLE001
                return False

    return asyncio.run(read())
