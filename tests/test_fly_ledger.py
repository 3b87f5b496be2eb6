"""The usage ledger through Supabase's REST API (PostgREST RPC with the service role), on a real
Supabase-shaped PostgreSQL behind the PostgREST stand-in: the same round trip and alert rules as the
SQLite and PostgreSQL ledgers (the tests of tests/test_quota_ledger.py, run on this ledger), and the
registry's choice (a run Machine with SUPABASE_URL and no DSN never writes a file)."""

from __future__ import annotations

import pytest

from blocks import registry
from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger, SupabaseUsageLedger
from tests import test_quota_ledger as shared
from tests.fake_postgrest import FakePostgrest
from tests.pg import pg_url  # noqa: F401
from vibeinsight.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture()
def rest(pg_url):  # noqa: F811
    with FakePostgrest(pg_url) as api:
        yield api


@pytest.fixture()
def supabase_ledger(rest):
    return SupabaseUsageLedger(url=rest.url, service_role_key=rest.service_key)


def test_round_trip_daily_egress_and_report(supabase_ledger, rest):
    shared.test_round_trip_daily_egress_and_report(supabase_ledger)
    paths = {r["path"] for r in rest.requests}
    assert paths == {"/rest/v1/rpc/record_usage_events", "/rest/v1/rpc/usage_events_between",
                     "/rest/v1/rpc/usage_daily_egress"}
    assert all(r["headers"]["apikey"] == rest.service_key for r in rest.requests)


def test_alert_rows_upsert_and_are_queryable(supabase_ledger):
    shared.test_alert_rows_upsert_and_are_queryable(supabase_ledger)


def test_rows_land_in_the_same_table_the_postgres_ledger_reads(supabase_ledger, pg_url):  # noqa: F811
    supabase_ledger.record([{"kind": "storage_download", "service": "tigris", "bytes": 1234,
                             "session_id": "5d1c1b4e-4a0e-4c8e-9a51-0c9a4f8b2f11", "meta": {"processing_s": 3.5}}])
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    frame = PostgresUsageLedger(url=pg_url).events(now - timedelta(hours=1), now + timedelta(hours=1))
    assert list(frame["bytes"]) == [1234] and frame["m_processing_s"].iloc[0] == 3.5


def test_anon_may_not_call_the_ledger_functions(rest):
    ledger = SupabaseUsageLedger(url=rest.url, service_role_key=rest.anon_key)
    with pytest.raises(Exception, match="40[13]"):
        ledger.record([{"kind": "api_call", "service": "openai"}])


@pytest.mark.parametrize(("env", "kind"), [
    ({}, SQLiteUsageLedger),
    ({"SUPABASE_URL": "https://ref.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}, SupabaseUsageLedger),
    ({"SUPABASE_URL": "https://ref.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k",
      "VIBEINSIGHT_STATUS_URL": "postgresql://db/x"}, PostgresUsageLedger),
    ({"SUPABASE_URL": "https://ref.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k",
      "VIBEINSIGHT_QUOTA_LEDGER_URL": "postgresql://db/x"}, PostgresUsageLedger),
])
def test_registry_picks_the_ledger(env, kind, monkeypatch, tmp_path):
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "VIBEINSIGHT_STATUS_URL", "VIBEINSIGHT_QUOTA_LEDGER_URL"):
        monkeypatch.delenv(name, raising=False)
    for k, v in {"VIBEINSIGHT_HOME": str(tmp_path), **env}.items():
        monkeypatch.setenv(k, v)
    assert type(registry.build_usage_ledger(Settings())) is kind
