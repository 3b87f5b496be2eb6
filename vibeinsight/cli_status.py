"""CLI commands: status observer and reconcile."""

from __future__ import annotations

import json

import typer

from vibeinsight.cli import app


@app.command("status-observer")
def status_observer() -> None:
    """Mirror the Prefect server's flow-run state events into processing_status (runs until stopped).

    Needs PREFECT_API_URL (the server to watch) and the status store's settings
    (VIBEINSIGHT_STATUS_URL, or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY).
    """
    from flows.status_observer import main

    main()


@app.command()
def reconcile(
    min_age_s: float = typer.Option(None, "--min-age", help="skip rows updated more recently (seconds)"),
    limit: int = typer.Option(500, "--limit", help="rows checked at most"),
    stale_after_s: float = typer.Option(None, "--stale-after",
                                        help="a RUNNING run silent this long is Crashed (default 3 heartbeats)"),
) -> None:
    """Once: give rows left PENDING/RUNNING the true state of their flow run in Prefect."""
    import asyncio

    from flows.reconcile_status import reconcile_once

    repaired = asyncio.run(reconcile_once(min_age_s, limit, stale_after_s))
    typer.echo(json.dumps({"repaired": repaired}))
