"""`vibeinsight trigger|stack`: runs through the Prefect API, and the local stack."""

from __future__ import annotations

import json
from typing import Optional

import typer

from vibeinsight.cli.common import EXIT_FAILED, fail

app = typer.Typer()

stack_app = typer.Typer(no_args_is_help=True,
                        help="Local stack: Prefect server, pool, deployments, worker(s), status observer")


@app.command()
def trigger(
    source: str = typer.Argument(..., help="the upload: a path or s3://bucket/key the workers can read"),
    session_id: Optional[str] = typer.Option(None, "--session-id", help="defaults to a new UUID; same id = same run"),
    user_id: Optional[str] = typer.Option(None, "--user-id"),
    language: str = typer.Option("auto", "--language"),
    deployment: str = typer.Option("process-audio/api", "--deployment"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Start a process-audio run on the deployment through Prefect's REST API (as the Edge Function does)."""
    from deployments.trigger import TriggerError
    from deployments.trigger import trigger as do_trigger

    try:
        t = do_trigger(source, session_id, user_id, language, deployment=deployment)
    except (TriggerError, ValueError) as exc:
        fail("trigger_failed", str(exc), EXIT_FAILED)
    if as_json:
        print(json.dumps(t.__dict__))
    else:
        print(f"session {t.session_id}: flow run {t.flow_run_id} ({t.state})")


@stack_app.command("up")
def stack_up(
    port: int = typer.Option(4200, "--port"),
    db_url: Optional[str] = typer.Option(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect", "--db-url",
        help="Prefect server database; '' for SQLite under VIBEINSIGHT_HOME"),
    workers: int = typer.Option(1, "--workers"),
    observer: bool = typer.Option(True, "--observer/--no-observer"),
) -> None:
    """Start the stack in the background; `stack down` stops it."""
    from deployments.stack import StackState
    from deployments.stack import stack_up as up
    from vibeinsight.settings import get_settings

    home = get_settings().home
    existing = StackState.load(home)
    if existing and any(existing.alive().values()):
        fail("stack_up", f"a stack is already up under {home} ({existing.api_url}); run `vibeinsight stack down`",
             EXIT_FAILED)
    if db_url and db_url.startswith("postgresql"):
        _ensure_pg_database(db_url)
    state = up(home, port=port, db_url=db_url or None, workers=workers, observer=observer)
    print(f"stack up: {state.api_url} (UI http://127.0.0.1:{port}); processes: {state.pids}")
    print(f"export PREFECT_API_URL={state.api_url}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the processes `stack up` started (by their pids), workers first."""
    from deployments.stack import stack_down as down
    from vibeinsight.settings import get_settings

    print("stopped: " + (", ".join(down(get_settings().home)) or "nothing"))


@stack_app.command("status")
def stack_status() -> None:
    """Each stack process and whether it is up; exit 1 unless all are."""
    from deployments.stack import StackState
    from vibeinsight.settings import get_settings

    state = StackState.load(get_settings().home)
    if state is None:
        print("stack: down")
        raise typer.Exit(1)
    alive = state.alive()
    print(f"stack: {state.api_url}")
    for name, up in alive.items():
        print(f"  {name:<10} pid {state.pids[name]:<8} {'up' if up else 'DOWN'}")
    raise typer.Exit(0 if all(alive.values()) else 1)


def _ensure_pg_database(db_url: str) -> None:
    """Create the server's PostgreSQL database if missing (Prefect migrates it on start)."""
    from urllib.parse import urlparse

    import psycopg

    u = urlparse(db_url.replace("+asyncpg", ""))
    name = u.path.lstrip("/")
    admin = u._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
