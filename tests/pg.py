"""Fresh PostgreSQL databases shaped like a new Supabase project, with every migration applied.

A Supabase project has, before any migration: the roles anon, authenticated and service_role,
a schema auth with auth.users and auth.uid(), and the supabase_realtime publication. These
stand-ins create exactly that on the machine's PostgreSQL (127.0.0.1:5432, user postgres).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "infra" / "supabase" / "migrations"
ADMIN_URL = os.environ.get("VIBEINSIGHT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

SUPABASE_STANDINS = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
END $$;
CREATE SCHEMA auth;
CREATE TABLE auth.users (id uuid PRIMARY KEY, email text);
-- As Supabase defines it: the subject of the request's JWT claims.
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
CREATE PUBLICATION supabase_realtime;
-- Supabase's default privileges: every new sequence in public is granted to the client roles
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
"""


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


def create_database(apply_migrations: bool = True) -> str:
    """Make a new database with the Supabase stand-ins (and the migrations); return its URL."""
    import psycopg

    name = f"vi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SUPABASE_STANDINS)
        if apply_migrations:
            for path in migration_files():
                conn.execute(path.read_text())
    return url


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh Supabase-shaped database with every migration applied."""
    try:
        url = create_database()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {ADMIN_URL} is not usable ({exc}); bin/test starts it")
    yield url
    drop_database(url)
