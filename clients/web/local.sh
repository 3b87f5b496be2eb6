#!/usr/bin/env bash
# The local stack and the reference page on this machine, in one command (stops with Ctrl-C):
# PostgreSQL's database with every migration, SeaweedFS as S3 (CORS on), the Supabase stand-ins
# (Auth, PostgREST, Realtime) behind one project URL, the Edge Function under Deno, a Prefect server
# and worker, and `vibeinsight web`. Prints the page's URL and an access token to paste.
# Usage: clients/web/local.sh [--port 8080]     (after `bin/bootstrap test`; PostgreSQL on 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m tests.web_stack "$@"
