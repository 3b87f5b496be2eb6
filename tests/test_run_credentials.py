"""Which Supabase credential a process sends: the operator's service role key when it has one, else the
runs' token beside the anon key; a run token alone is enough to choose the Supabase store and ledger."""

from __future__ import annotations

import pytest

from blocks import registry
from blocks.status_store import SupabaseStatusStore
from blocks.usage_ledger import SupabaseUsageLedger
from vibeinsight.settings import Settings, SupabaseOptions

pytestmark = pytest.mark.unit


def test_the_service_role_key_wins_then_the_run_token_goes_with_the_anon_key():
    both = SupabaseOptions(url="https://ref.supabase.co", service_role_key="srk", run_token="rt", anon_key="anon")
    assert both.auth_headers() == {"apikey": "srk", "Authorization": "Bearer srk"}
    run = SupabaseOptions(url="https://ref.supabase.co", run_token="rt", anon_key="anon")
    assert run.auth_headers() == {"apikey": "anon", "Authorization": "Bearer rt"}
    with pytest.raises(ValueError, match="SUPABASE_ANON_KEY"):
        SupabaseOptions(url="https://ref.supabase.co", run_token="rt").auth_headers()
    with pytest.raises(ValueError, match="SUPABASE_RUN_TOKEN"):
        SupabaseOptions(url="https://ref.supabase.co").auth_headers()


def test_a_runs_app_with_only_the_run_token_writes_through_supabase(monkeypatch):
    for name in ("VIBEINSIGHT_STATUS_URL", "VIBEINSIGHT_QUOTA_LEDGER_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    monkeypatch.setenv("SUPABASE_RUN_TOKEN", "rt")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon")
    s = Settings()
    assert isinstance(registry.build_status_store(s), SupabaseStatusStore)
    assert isinstance(registry.build_usage_ledger(s), SupabaseUsageLedger)
    assert registry.build_status_store(s).auth_headers()["Authorization"] == "Bearer rt"
    monkeypatch.delenv("SUPABASE_RUN_TOKEN")
    assert not isinstance(registry.build_status_store(Settings()), SupabaseStatusStore)  # no credential: local
