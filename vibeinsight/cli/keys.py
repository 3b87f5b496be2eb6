"""`vibeinsight keys run-token`: the Supabase credential of the runs app (an operator's command)."""

from __future__ import annotations

import os

import typer

from vibeinsight.cli.common import fail

app = typer.Typer(no_args_is_help=True, help="Credentials an operator hands to the apps")

SECRET_ENV = "SUPABASE_JWT_SECRET"


@app.command("run-token")
def run_token(days: float = typer.Option(365.0, "--days", help="lifetime; mint a new one before it ends")) -> None:
    """Print a JWT for the database role vibeinsight_run, signed with the project's JWT secret
    (read from SUPABASE_JWT_SECRET, never an argument: it would stay in the shell's history).

    Set it on the runs app as SUPABASE_RUN_TOKEN, beside SUPABASE_ANON_KEY, instead of the service role key."""
    from vibeinsight.run_token import RunTokenError, mint_run_token

    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        fail("invalid_setting", f"{SECRET_ENV} is not set (Supabase dashboard: Project Settings → API → JWT secret)")
    try:
        print(mint_run_token(secret, days))
    except RunTokenError as exc:
        fail("invalid_setting", str(exc))
