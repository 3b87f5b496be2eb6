"""The provider columns of the usage ledger on SQLite and the real PostgreSQL: the migration and the
SQLite upgrade book old rows to their provider, and the guard's daily totals count only what
Supabase bills."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timezone

import psycopg
import pytest

from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger
from tests.pg import create_database, drop_database, migration_files
from tests.quota_helpers import MB, at, download
from vibeinsight.quota import month_bounds
from vibeinsight.usage import machine_run_event

pytestmark = pytest.mark.integration

M = "2026-11"
OLD_SQLITE = """
CREATE TABLE usage_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('storage_download','storage_upload','api_call','edge_response',
                                       'realtime_message','status_write','result_download')),
    service TEXT, bytes INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0, audio_seconds REAL NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0, at TEXT NOT NULL, meta TEXT NOT NULL DEFAULT '{}');
INSERT INTO usage_events (session_id, kind, service, bytes, calls, at) VALUES
    ('s1', 'storage_download', 'tigris', 15000000, 1, '2026-11-02T12:00:00+00:00'),
    ('s1', 'status_write', 'realtime', 4000, 10, '2026-11-02T12:00:00+00:00'),
    ('s2', 'storage_download', 's3', 1000, 1, '2026-11-02T12:00:00+00:00');
"""


def _mixed_rows() -> list[dict]:
    sid = str(uuid.uuid4())
    return [download(M, 3, 15 * MB, service="tigris") | {"session_id": sid},
            dict(session_id=sid, kind="status_write", service="realtime", calls=20, bytes=8000, at=at(M, 3)),
            download(M, 3, 2 * MB, service="supabase"),
            dict(kind="api_call", service="openai", calls=3, cost_usd=0.18, at=at(M, 3)),
            machine_run_event(session_id=sid, flow_run_id="f", cpu_kind="performance", cpus=2, memory_mb=4096,
                              seconds=100, region="nrt", at=at(M, 3)).model_dump(),
            dict(kind="storage_held", service="tigris", bytes=15 * MB, at=at(M, 3))]


@pytest.fixture(params=["sqlite", "postgres", "supabase-rest"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteUsageLedger(path=str(tmp_path / "usage.db"))
    elif request.param == "postgres":
        yield PostgresUsageLedger(url=request.getfixturevalue("pg_url"))
    else:  # Supabase's REST API: the migrations' RPC functions behind the PostgREST stand-in
        from blocks.usage_ledger import SupabaseUsageLedger
        from tests.fake_postgrest import FakePostgrest

        with FakePostgrest(request.getfixturevalue("pg_url")) as rest:
            yield SupabaseUsageLedger(url=rest.url, service_role_key=rest.service_key)


def test_daily_totals_count_only_what_supabase_bills(ledger):
    rows = _mixed_rows()
    assert ledger.record(rows) == len(rows)
    start, end, _ = month_bounds(M)
    day = ledger.daily_totals(start, end)["2026-11-03"]
    machine_usd = rows[4]["cost_usd"]
    assert day == {"supabase_egress_bytes": 2 * MB + 8000, "realtime_messages": 20,
                   "cost_usd": pytest.approx(0.18 + machine_usd), "sessions": 2}
    assert ledger.daily_egress(start, end) == {"2026-11-03": 2 * MB + 8000}
    frame = ledger.events(start, end)
    assert set(frame["provider"]) == {"tigris", "supabase", "openai", "fly"}
    fly = frame[frame["kind"] == "machine_run"].iloc[0]
    assert (fly["seconds"], fly["m_size"]) == (100.0, "performance-2x/4096MB")


def test_an_old_sqlite_ledger_is_upgraded_in_place(tmp_path):
    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SQLITE)
    led = SQLiteUsageLedger(path=str(path))
    led.record([machine_run_event(session_id=None, flow_run_id="f", cpu_kind="shared", cpus=1, memory_mb=1024,
                                  seconds=60, at=at(M, 2))])  # a kind the old CHECK refused
    start, end, _ = month_bounds(M)
    frame = led.events(start, end).sort_values("kind")
    assert list(zip(frame["kind"], frame["provider"], strict=True)) == [
        ("machine_run", "fly"), ("status_write", "supabase"), ("storage_download", "tigris"),
        ("storage_download", "other")]
    assert led.daily_totals(start, end)["2026-11-02"]["supabase_egress_bytes"] == 4000  # 15 MB from Tigris: none


def test_the_postgres_migration_books_old_rows_and_refuses_rows_without_a_provider():
    url = create_database(apply_migrations=False)
    try:
        files = migration_files()
        new = [f for f in files if f.name.endswith("_usage_providers.sql")]
        with psycopg.connect(url, autocommit=True) as conn:
            for f in files:
                if f not in new and f.name < new[0].name:
                    conn.execute(f.read_text())
            conn.execute("insert into public.usage_events (kind, service, bytes, calls) values "
                         "('storage_download', 'tigris', 15000000, 1), ('status_write', 'realtime', 4000, 10), "
                         "('api_call', 'gemini', 0, 1), ('storage_download', null, 5, 1)")
            for f in files:
                if f.name >= new[0].name:
                    conn.execute(f.read_text())
            got = conn.execute("select service, provider from public.usage_events order by id").fetchall()
            assert got == [("tigris", "tigris"), ("realtime", "supabase"), ("gemini", "gemini"), (None, "local")]
            with pytest.raises(psycopg.errors.NotNullViolation):
                conn.execute("insert into public.usage_events (kind, service) values ('api_call', 'openai')")
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("insert into public.usage_events (kind, provider) values ('api_call', 'aws')")
            conn.execute("insert into public.usage_events (kind, provider, seconds) values ('machine_run', 'fly', 12.5)")
    finally:
        drop_database(url)


def test_the_worker_books_a_machine_run(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from deployments.machine_usage import book_machine_run
    from vibeinsight.settings import Settings

    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path))
    settings = Settings()
    sid = str(uuid.uuid4())
    run = SimpleNamespace(id=uuid.uuid4(), parameters={"session_id": sid, "source": "s3://b/k"})
    guest = {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}
    assert book_machine_run(run, guest, 123.4, "nrt,hkg", "m-1", settings) == 1
    frame = SQLiteUsageLedger(path=str(tmp_path / "usage.db")).events(*month_bounds(
        datetime.now(timezone.utc).strftime("%Y-%m"))[:2])
    row = frame.iloc[0]
    assert (row["kind"], row["provider"], row["session_id"], row["seconds"], row["m_size"]) == (
        "machine_run", "fly", sid, 123.4, "performance-2x/4096MB")
    assert row["cost_usd"] == pytest.approx(123.4 * 2 * 0.000012732 * 1.307692308, abs=1e-6)
    # a ledger that cannot be written never fails the worker
    monkeypatch.setenv("VIBEINSIGHT_QUOTA_LEDGER_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert book_machine_run(run, guest, 1.0, "nrt", "m-1", Settings()) == 0
