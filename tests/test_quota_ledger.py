"""The usage ledger against SQLite and the real PostgreSQL (with the status and quota migrations),
and `vibeinsight quota report` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import psycopg
import pytest

from blocks.plans import Plans
from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger
from tests.pg import ROOT
from tests.quota_helpers import GB, MB, at, daily_downloads, download
from vibeinsight.quota import month_bounds, month_report

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteUsageLedger(path=str(tmp_path / "usage.db"))
    else:
        url = request.getfixturevalue("pg_url")
        yield PostgresUsageLedger(url=url)


def test_round_trip_daily_egress_and_report(ledger):
    m = "2026-11"
    rows = daily_downloads(m, [45 * MB] * 10, files_per_day=3)
    rows += [dict(kind="api_call", service="openai", calls=2, retries=1, bytes=5 * MB, tokens=0, cost_usd=0.123456,
                  at=at(m, 3), meta={"ok": True, "tokens": {}}),
             dict(kind="realtime_message", service="supabase", bytes=700, calls=4, at=at(m, 4),
                  meta={"connections": 42, "note": "日本語"}),
             download("2026-10", 31, 9 * GB),  # another month: never counted
             download("2026-12", 1, 9 * GB)]
    assert ledger.record(rows) == len(rows)
    start, end, _ = month_bounds(m)
    frame = ledger.events(start, end)
    assert len(frame) == 32
    assert frame["at"].min() == at(m, 1) and str(frame["at"].dt.tz) == "UTC"
    rt = frame[frame["kind"] == "realtime_message"].iloc[0]
    assert rt["m_connections"] == 42
    assert frame.loc[frame["kind"] == "api_call", "cost_usd"].iloc[0] == pytest.approx(0.123456)
    daily = ledger.daily_egress(start, end)
    assert daily["2026-11-01"] == 45 * MB and daily["2026-11-04"] == 45 * MB + 700 and len(daily) == 10
    s, _ = month_report(frame, Plans().limits("free"), m, at(m, 10))
    assert s["egress_bytes"] == 450 * MB + 700 and s["files_processed"] == 30
    assert s["api_calls"] == {"openai": 2} and s["retries"] == {"openai": 1}
    assert s["realtime"]["peak_connections"] == 42


def test_alert_rows_upsert_and_are_queryable(ledger):
    alert = {"metric": "egress_bytes", "basis": "forecast", "level": "exceeded", "value": 6e9, "limit": 5e9,
             "pct": 120.0, "message": "egress_bytes is forecast to reach 120.0 %"}
    assert ledger.record_alerts([alert], "2026-11", "free", "run-1") == 1
    ledger.record_alerts([{**alert, "value": 7e9, "pct": 140.0}], "2026-11", "free", "run-2")
    rows = ledger.alerts("2026-11")
    assert len(rows) == 1
    row = rows[0]
    assert (row["pct"], row["flow_run_id"], row["level"], row["basis"]) == (140.0, "run-2", "exceeded", "forecast")
    assert str(row["first_seen_at"]) <= str(row["last_seen_at"])
    assert ledger.alerts("2026-10") == []


def test_postgres_rls_keeps_quota_alerts_and_others_usage_private(pg_url):
    led = PostgresUsageLedger(url=pg_url)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    s_mine, s_theirs = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s), (%s)", (mine, theirs))
        conn.execute("insert into public.processing_status (session_id, user_id, status, seq) "
                     "values (%s, %s, 'COMPLETED', 1), (%s, %s, 'COMPLETED', 1)", (s_mine, mine, s_theirs, theirs))
    led.record([download("2026-11", 1, 10, session_id=None) | {"session_id": str(s_mine)},
                download("2026-11", 1, 20) | {"session_id": str(s_theirs)}])
    led.record_alerts([{"metric": "egress_bytes", "basis": "now", "level": "warning", "value": 1.0, "limit": 1.0,
                        "pct": 80.0, "message": "m"}], "2026-11", "free")
    with psycopg.connect(pg_url) as conn:
        conn.execute("set role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": str(mine)}),))
        assert conn.execute("select bytes from public.usage_events").fetchall() == [(10,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from public.quota_alerts")
    with psycopg.connect(pg_url) as conn:
        conn.execute("set role service_role")
        assert conn.execute("select count(*) from public.quota_alerts").fetchone()[0] == 1


def test_cli_quota_report_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vibeinsight.cli import app
    from vibeinsight.quota import current_month

    home = tmp_path / "home"
    led = SQLiteUsageLedger(path=str(home / "usage.db"))
    # this month's report (with its guard) runs in this process: on the same clock as the events booked,
    # moved or not (a subprocess keeps the real time)
    month = current_month(datetime.now(timezone.utc))
    led.record([download(month, 1, 2 * GB), download(month, 1, 2 * GB)])
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(home))
    env = {**os.environ}
    out = CliRunner().invoke(app, ["quota", "report", "--plan", "free", "--json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.stdout)
    for key in ("egress_bytes", "egress_limit_bytes", "egress_pct", "forecast_bytes", "files_processed",
                "avg_file_bytes", "files_remaining", "cost_usd", "realtime", "api_calls", "retries", "audio_minutes",
                "tokens", "cost_by_service", "metrics", "alerts", "forecast_method", "guard"):
        assert key in s, key
    assert s["egress_bytes"] == 4 * GB and s["egress_pct"] == 80.0 and s["files_remaining"] == 0
    assert any(a["metric"] == "egress_bytes" and a["basis"] == "now" and a["level"] == "warning" for a in s["alerts"])
    assert (home / "bucket" / "reports" / month / "daily.csv").is_file()
    # the design's older table, a past month, and a bad month
    out = subprocess.run([sys.executable, "-m", "vibeinsight", "quota", "report", "--plan", "pro", "--table", "design",
                          "--month", "2020-02", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    s = json.loads(out.stdout)
    assert (s["plan_table"], s["egress_limit_bytes"], s["days_in_month"], s["egress_bytes"]) == ("design", 50 * GB, 29, 0)
    assert "guard" not in s
    bad = subprocess.run([sys.executable, "-m", "vibeinsight", "quota", "report", "--month", "2026-13"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error: invalid_argument" in bad.stderr
