"""The per-user upload limits of migration 20261204000400 on a real PostgreSQL (request_upload(), what the
Edge Function's /uploads asks before it signs a URL), and their figures in the shared limits file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from vibeinsight.settings import SHARED_LIMITS_PATH, Limits

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def db(pg_url):
    user = uuid.uuid4()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (user,))
        conn.execute("set role service_role")
        yield conn, user


def ask(conn, user, bytes_: int, per_hour: int = 3, per_day: int = 1000) -> str:
    key = f"uploads/{user}/{uuid.uuid4()}.wav"
    return conn.execute("select public.request_upload(%s, %s, %s, %s, %s)",
                        (user, key, bytes_, per_hour, per_day)).fetchone()[0]["outcome"]


def age(conn, user, interval: str) -> None:
    """Move the user's rows back in time, as the hours pass."""
    conn.execute("reset role")
    conn.execute(f"update public.upload_requests set created_at = created_at - interval '{interval}' where user_id = %s",
                 (user,))
    conn.execute("set role service_role")


@pytest.mark.integration
def test_urls_per_hour_count_the_last_hour_only(db):
    conn, user = db
    assert [ask(conn, user, 10) for _ in range(4)] == ["created"] * 3 + ["too_many_uploads_per_hour"]
    age(conn, user, "61 minutes")
    assert ask(conn, user, 10) == "created"  # an hour later the URLs count no more…
    assert conn.execute("select count(*) from public.upload_requests where user_id = %s", (user,)).fetchone()[0] == 4


@pytest.mark.integration
def test_bytes_per_day_count_the_last_24_hours_and_older_rows_go(db):
    conn, user = db
    assert ask(conn, user, 600, per_hour=99) == "created"
    assert ask(conn, user, 401, per_hour=99) == "too_many_upload_bytes"
    assert ask(conn, user, 400, per_hour=99) == "created"  # exactly the day's limit still fits
    assert ask(conn, user, 1, per_hour=99) == "too_many_upload_bytes"
    age(conn, user, "23 hours")
    assert ask(conn, user, 1, per_hour=99) == "too_many_upload_bytes"
    age(conn, user, "61 minutes")
    assert ask(conn, user, 1000, per_hour=99) == "created"
    # …and the rows older than a day are gone: only the one just made is left
    assert conn.execute("select count(*) from public.upload_requests where user_id = %s", (user,)).fetchone()[0] == 1


@pytest.mark.integration
def test_another_user_has_their_own_limits_and_clients_cannot_call_it(db, pg_url):
    conn, user = db
    assert [ask(conn, user, 10, per_hour=1) for _ in range(2)] == ["created", "too_many_uploads_per_hour"]
    other = uuid.uuid4()
    conn.execute("reset role")
    conn.execute("insert into auth.users (id) values (%s)", (other,))
    conn.execute("set role service_role")
    assert ask(conn, other, 10, per_hour=1) == "created"
    for role in ("anon", "authenticated"):
        with psycopg.connect(pg_url, autocommit=True) as client:
            client.execute(f"set role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ask(client, user, 10)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute("select * from public.upload_requests")


@pytest.mark.unit
def test_python_reads_the_upload_limits_of_the_shared_file():
    shared = json.loads((ROOT / SHARED_LIMITS_PATH).read_text())
    limits = Limits()
    assert (limits.max_uploads_per_hour_per_user, limits.max_upload_bytes_per_day_per_user) == (
        shared["max_uploads_per_hour_per_user"], shared["max_upload_bytes_per_day_per_user"])
    config_ts = (ROOT / "infra/supabase/functions/process-audio/config.ts").read_text()
    assert "LIMITS.max_uploads_per_hour_per_user" in config_ts and "LIMITS.max_upload_bytes_per_day_per_user" in config_ts
