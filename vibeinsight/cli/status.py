"""`vibeinsight status|status-observer|reconcile`: read a session's row, mirror and repair states."""

from __future__ import annotations

import json
import uuid

import typer

from vibeinsight.cli.common import EXIT_FAILED, fail, is_uuid

app = typer.Typer()


@app.command()
def status(
    session_id: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print a session's status row."""
    from blocks import registry

    if not is_uuid(session_id):
        fail("invalid_argument", f"SESSION_ID must be a UUID, got {session_id[:80]!r}")
    row = registry.status_store().get(str(uuid.UUID(session_id)))
    if row is None:
        fail("not_found", f"no status for session {session_id}", EXIT_FAILED)
    fields = ("session_id", "user_id", "flow_run_id", "status", "stage", "progress", "error_code",
              "error_message", "updated_at")
    data = row.model_dump(mode="json", include=set(fields))
    if as_json:
        print(json.dumps({k: data[k] for k in fields}, ensure_ascii=False))
    else:
        for k in fields:
            print(f"{k:14} {data[k] if data[k] is not None else ''}")


@app.command("status-observer")
def status_observer() -> None:
    """Mirror the Prefect server's flow-run state events into processing_status (runs until stopped).

    Needs PREFECT_API_URL (the server to watch) and the status store's settings
    (VIBEINSIGHT_STATUS_URL, or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY).
    """
    from deployments.status_observer import main

    main()


@app.command()
def reconcile(
    min_age_s: float = typer.Option(None, "--min-age", help="skip rows updated more recently (seconds)"),
    limit: int = typer.Option(500, "--limit", help="rows checked at most"),
    stale_after_s: float = typer.Option(None, "--stale-after",
                                        help="a RUNNING run silent this long is Crashed (default 3 heartbeats)"),
    pending_after_s: float = typer.Option(None, "--pending-after",
                                          help="a run Pending this long (its worker gone) is scheduled again"),
    orphan_after_s: float = typer.Option(None, "--orphan-after",
                                         help="a PENDING row without a flow run this old is FAILED (stale_pending)"),
) -> None:
    """Once: give rows left PENDING/RUNNING the true state of their flow run in Prefect."""
    import asyncio

    from flows.reconcile_status import reconcile_once

    repaired = asyncio.run(reconcile_once(min_age_s, limit, stale_after_s, pending_after_s, orphan_after_s))
    typer.echo(json.dumps({"repaired": repaired}))
