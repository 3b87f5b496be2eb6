"""Create the work pool and its queues, then `prefect --no-prompt deploy --all` from prefect.yaml.

Non-interactive deploys fail on a missing pool, so the pool comes first. Queues get priorities:
`realtime` (user uploads, priority 1) is served before `default` (reports, reconciliation).
Usage: python -m deployments.deploy [--pool NAME] [--app-dir DIR]  (PREFECT_API_URL must be set).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL_TEMPLATE = ROOT / "deployments" / "fly-pool.json"
DEFAULT_POOL = "vibeinsight-fly"
# The pool's `default` queue exists already; `realtime` (user uploads) is created at priority 1,
# which Prefect puts ahead of it (lower number = served first).
REALTIME_QUEUE = "realtime"


def pool_name() -> str:
    return os.environ.get("VIBEINSIGHT_WORK_POOL") or DEFAULT_POOL


def _prefect(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe) if exe.exists() else "prefect", "--no-prompt", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=check, capture_output=True, text=True)


def ensure_pool(pool: str, env: dict[str, str], concurrency: int | None = None) -> None:
    """Create or update the process pool with the Fly.io base job template, then its queues."""
    _prefect("work-pool", "create", pool, "--type", "process", "--base-job-template", str(POOL_TEMPLATE),
             "--overwrite", env=env)
    if concurrency:
        _prefect("work-pool", "set-concurrency-limit", pool, str(concurrency), env=env)
    # fails harmlessly when the queue exists already (a re-deploy)
    _prefect("work-queue", "create", REALTIME_QUEUE, "--pool", pool, "--priority", "1", env=env, check=False)


def deploy_all(pool: str | None = None, app_dir: str | None = None, names: list[str] | None = None) -> str:
    """Deploy every deployment of prefect.yaml (or only `names`); returns Prefect's output."""
    env = {**os.environ, "VIBEINSIGHT_WORK_POOL": pool or pool_name(),
           "VIBEINSIGHT_APP_DIR": app_dir or os.environ.get("VIBEINSIGHT_APP_DIR") or "/app"}
    ensure_pool(env["VIBEINSIGHT_WORK_POOL"], env)
    args = ["deploy", "--all"] if not names else ["deploy", *[a for n in names for a in ("--name", n)]]
    done = _prefect(*args, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=None)
    parser.add_argument("--app-dir", default=None, help="where workers find the project (image: /app)")
    parser.add_argument("--name", action="append", help="deploy only these (e.g. process-audio/api)")
    a = parser.parse_args()
    print(deploy_all(a.pool, a.app_dir, a.name))


if __name__ == "__main__":
    main()
