"""Configure the bucket, create the work pool, its queues and the global concurrency limit, then
`prefect deploy --all`.

What `prefect deploy --all` alone does not: a non-interactive deploy fails on a missing pool, and
the flow's cross-run cap on API calls (`VIBEINSIGHT_API_CONCURRENCY_LIMIT`, a Prefect global
concurrency limit) is silently no cap when the limit does not exist. Queues get priorities:
`realtime` (user uploads, priority 1) is served before `default` (reports, reconciliation).

Usage: python -m deployments.deploy [--pool NAME] [--type fly-machines|process] [--api-limit N]
(PREFECT_API_URL must be set). `--type process` makes the same deployments run under local
process workers (the local stack, tests, the benchmark). With object storage configured
(FLY_S3_ENDPOINT), the bucket is set up first, as `vibeinsight storage setup` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vibeinsight.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
DEFAULT_POOL = "vibeinsight-fly"  # the name prefect.yaml gives the runs' deployment (one Machine a run)
DEFAULT_POOL_TYPE = "fly-machines"
# The operators' flows (reconcile, quota report): process workers on the worker app, which holds the
# wider keys that run Machines must not (prefect.yaml's `ops_pool`).
OPS_POOL = "vibeinsight-ops"
OPS_POOL_TYPE = "process"
# The pool's `default` queue exists already; `realtime` (user uploads) is created at priority 1,
# which Prefect puts ahead of it (lower number = served first).
REALTIME_QUEUE = "realtime"
# Transcription API calls in flight across all runs (each run sends up to VIBEINSIGHT_OPENAI_CONCURRENCY).
API_LIMIT_SLOTS = 8


def pool_name() -> str:
    return os.environ.get("VIBEINSIGHT_WORK_POOL") or DEFAULT_POOL


def _prefect(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe) if exe.exists() else "prefect", "--no-prompt", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env or dict(os.environ), check=check, capture_output=True, text=True)


# A process worker with no command starts Prefect's workspace supervisor, which prepares a workspace
# (pull steps, uv) and then starts the engine: a second Python process per run that these deployments,
# installed modules with no pull step, never need. Naming the engine keeps one process per run; the
# worker itself still watches it for cancellation and runs the crash hooks. `python` is the one on the
# worker's PATH (the image's venv; deployments/stack.py puts this venv first for local workers).
PROCESS_ENGINE_COMMAND = "python -m prefect.engine"


@contextlib.asynccontextmanager
async def _client():
    """A client of the API the environment names now, as the CLI this replaces read it: Prefect fixes
    its settings at import, and the tests' stacks set PREFECT_API_URL after that."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    updates = {s: os.environ[s.name] for s in (PREFECT_API_URL, PREFECT_API_KEY) if os.environ.get(s.name)}
    with temporary_settings(updates=updates):
        async with get_client() as client:
            yield client


async def _base_job_template(pool_type: str) -> dict:
    """The type's default template (the fly-machines one is the project's: deployments/fly_worker/config.py);
    a process pool's runs start the engine directly."""
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    template = await get_default_base_job_template_for_infrastructure_type(pool_type)
    if template is None:
        raise ValueError(f"unknown work pool type {pool_type!r} (is its worker package installed?)")
    if pool_type == "process":
        template["variables"]["properties"]["command"]["default"] = PROCESS_ENGINE_COMMAND
    return template


async def _ensure_pool(pool: str, pool_type: str, base_job_template: dict | None) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with _client() as client:
        template = base_job_template or await _base_job_template(pool_type)
        try:
            await client.create_work_pool(WorkPoolCreate(name=pool, type=pool_type, base_job_template=template))
        except ObjectAlreadyExists:
            pass  # an existing pool keeps its template (an operator may have edited it)
        try:
            await client.create_work_queue(REALTIME_QUEUE, priority=1, work_pool_name=pool)
        except ObjectAlreadyExists:
            pass  # a re-deploy


def ensure_pool(pool: str, pool_type: str = DEFAULT_POOL_TYPE, base_job_template: dict | None = None) -> None:
    """Create the pool (with `base_job_template`, or its type's default) if missing, then its queues,
    through the API of PREFECT_API_URL. An existing pool keeps its template."""
    asyncio.run(_ensure_pool(pool, pool_type, base_job_template))


async def _ensure_api_limit(name: str, slots: int) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists

    async with _client() as client:
        try:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
        except ObjectAlreadyExists:
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots))


def ensure_api_limit(slots: int = API_LIMIT_SLOTS) -> str:
    """The global concurrency limit every transcription call holds a slot of: created, or its size set."""
    name = get_settings().api_concurrency_limit
    asyncio.run(_ensure_api_limit(name, slots))
    return name


def setup_storage(settings: Settings | None = None) -> dict | None:
    """Create the bucket if missing and put its CORS and lifecycle rules (blocks.storage.setup_bucket);
    None when the pipeline keeps its files locally. Idempotent: the deploy runs it every time."""
    from blocks.registry import build_storage
    from blocks.storage import BucketSetup, FallbackStorage, S3Bucket, setup_bucket

    s = settings or get_settings()
    store = build_storage(s)
    if isinstance(store, FallbackStorage):  # the fallback (Supabase Storage) has no lifecycle API
        store = store.primary
    if not isinstance(store, S3Bucket):
        return None
    setup = BucketSetup(cors_origins=s.bucket.cors_origins, upload_days=s.bucket.upload_retention_days,
                        upload_prefixes=s.s3.upload_prefixes)
    return setup_bucket(store, setup)


def deploy_all(pool: str | None = None, names: list[str] | None = None, pool_type: str = DEFAULT_POOL_TYPE,
               api_limit: int = API_LIMIT_SLOTS) -> str:
    """Pool, queues, limit, then every deployment of prefect.yaml (or only `names`); returns Prefect's output."""
    pool = pool or pool_name()
    setup_storage()
    ensure_pool(pool, pool_type)
    # Fly: the runs' pool and the operators' pool; anything else (a local stack of process workers,
    # the tests): one pool runs every deployment.
    one_pool = (pool, pool_type) != (DEFAULT_POOL, DEFAULT_POOL_TYPE)
    if not one_pool:
        ensure_pool(OPS_POOL, OPS_POOL_TYPE)
    ensure_api_limit(api_limit)
    args = ["deploy", "--all"] if not names else ["deploy", *[a for n in names for a in ("--name", n)]]
    with tempfile.TemporaryDirectory() as tmp:
        if one_pool:  # `prefect deploy --all --pool` ignores --pool: deploy a copy that names it for every deployment
            spec = Path(tmp) / "prefect.yaml"
            text = PREFECT_YAML.read_text()
            for name in (DEFAULT_POOL, OPS_POOL):
                text = text.replace(f"name: {name}\n", f"name: {pool}\n")
            spec.write_text(text)
            args += ["--prefect-file", str(spec)]
        done = _prefect(*args, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=None, help=f"work pool (default {DEFAULT_POOL}, or VIBEINSIGHT_WORK_POOL)")
    parser.add_argument("--type", dest="pool_type", default=DEFAULT_POOL_TYPE, help="pool type when it is created")
    parser.add_argument("--api-limit", type=int, default=API_LIMIT_SLOTS, help="slots of the API concurrency limit")
    parser.add_argument("--name", action="append", help="deploy only these (e.g. process-audio/api)")
    a = parser.parse_args()
    print(deploy_all(a.pool, a.name, a.pool_type, a.api_limit))


if __name__ == "__main__":
    main()
