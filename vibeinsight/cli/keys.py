"""`vibeinsight keys run-token|run-login`: the runs app's database credential (operators' commands)."""

from __future__ import annotations

import os
import re
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import typer

from vibeinsight.cli.common import fail

app = typer.Typer(no_args_is_help=True, help="Credentials an operator hands to the apps")

SECRET_ENV = "SUPABASE_JWT_SECRET"
ADMIN_URL_ENV = "VIBEINSIGHT_ADMIN_DB_URL"
LOGIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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


@app.command("run-login")
def run_login(name: str = typer.Option("vibeinsight_run_machine", "--name", help="the login role to create or rotate")) -> None:
    """Create (or give a new password to) a PostgreSQL login that is a member of vibeinsight_run, and print
    its postgresql:// URL: the runs app's VIBEINSIGHT_STATUS_URL for a direct PostgreSQL status store.

    Connects with VIBEINSIGHT_ADMIN_DB_URL (a role that may create roles, e.g. Supabase's postgres); running
    it again rotates the password (the old URL stops working)."""
    import psycopg
    from psycopg import sql

    from vibeinsight.settings import RUN_ROLE

    admin = os.environ.get(ADMIN_URL_ENV, "")
    if not admin.startswith(("postgresql://", "postgres://")):
        fail("invalid_setting", f"{ADMIN_URL_ENV} must be a postgresql:// URL of a role that may create roles")
    if not LOGIN_NAME.match(name) or name == RUN_ROLE:
        fail("invalid_argument", f"--name must be a lower-case SQL name other than {RUN_ROLE}, got {name[:80]!r}")
    password = secrets.token_urlsafe(32)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("select 1 from pg_roles where rolname = %s", (RUN_ROLE,)).fetchone() is None:
            fail("invalid_setting", f"the role {RUN_ROLE} does not exist: apply the migrations first")
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone() is not None
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(RUN_ROLE), sql.Identifier(name)))
    parts = urlsplit(admin)
    host = parts.hostname or ""
    # Supabase's pooler names users `role.<project-ref>`: the login keeps the admin's suffix
    tenant = (parts.username or "").partition(".")[2]
    user = f"{name}.{tenant}" if tenant else name
    netloc = f"{quote(user)}:{quote(password, safe='')}@{f'[{host}]' if ':' in host else host}" + \
        (f":{parts.port}" if parts.port else "")
    print(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
