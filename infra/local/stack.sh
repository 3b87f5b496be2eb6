#!/usr/bin/env bash
# The local stack as production runs it, on one machine: a Prefect server on this machine's
# PostgreSQL (database `prefect`, created if missing), the vibeinsight-fly pool and every
# deployment of prefect.yaml, a worker on the pool and the status observer.
# Usage: infra/local/stack.sh up [--workers N] [--port 4200] | down | status
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m vibeinsight stack "$@"
