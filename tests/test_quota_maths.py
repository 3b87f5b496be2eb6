"""Quota maths on synthetic ledgers against hand-computed expectations (no Prefect, no database)."""

from __future__ import annotations

import math
import uuid

import pytest

from blocks.plans import Plans
from tests.quota_helpers import GB, MB, at, daily_downloads, download
from vibeinsight.quota import compact_settings, forecast_month, guard_decision, month_report, to_frame
from vibeinsight.usage import events_from_document

pytestmark = pytest.mark.unit


def report(rows, plan="free", month="2026-11", day=10, table=None, hour=12):
    limits = Plans(plan_table=table).limits(plan)
    return month_report(to_frame(rows), limits, month, at(month, day, hour))


def test_plans_file_current_and_design_tables_with_sources():
    cur, design = Plans().limits("pro"), Plans(plan_table="design").limits("pro")
    assert (cur.table, cur.egress_limit_bytes, cur.egress_overage_usd_per_gb) == ("supabase-current", 250 * GB, 0.09)
    assert (design.table, design.egress_limit_bytes) == ("design", 50 * GB)
    assert Plans().limits("free").egress_limit_bytes == 5 * GB == Plans(plan_table="design").limits("free").egress_limit_bytes
    team = Plans().limits("team")
    assert (team.realtime_connections, team.realtime_messages_per_s) == (10_000, 2_500)
    free = Plans().limits("free")
    assert (free.realtime_connections, free.realtime_messages_per_s, free.realtime_channels_per_connection) == (200, 100, 100)
    for fig in cur.sources.values():  # every figure says where it came from and when
        assert fig.source and len(fig.read) == 10
    with pytest.raises(ValueError, match="unknown plan"):
        Plans().limits("enterprise")
    with pytest.raises(ValueError, match="unknown plan table"):
        Plans(plan_table="nope").limits("free")


def test_steady_month():
    # 3 files of 15 MB a day for 10 days of a 30-day month.
    s, daily = report(daily_downloads("2026-11", [45 * MB] * 10, files_per_day=3))
    assert s["egress_bytes"] == 450 * MB and s["egress_pct"] == 9.0
    assert s["forecast_bytes"] == 450 * MB + 20 * 45 * MB  # flat trend: 45 MB a day for 20 more days
    assert s["forecast_pct"] == 27.0
    assert s["files_processed"] == 30 and s["avg_file_bytes"] == 15 * MB
    assert s["files_remaining"] == math.floor((5 * GB - 450 * MB) / (15 * MB)) == 303
    assert s["audio_minutes"] == 30 * 30.0
    assert s["alerts"] == []
    assert "least squares" in s["forecast_method"]
    assert len(daily) == 30 and daily["egress_bytes"].sum() == 450 * MB
    assert daily["egress_cum_bytes"].iloc[9] == 450 * MB and math.isnan(daily["egress_cum_bytes"].iloc[10])
    assert daily["forecast_cum_bytes"].iloc[29] == pytest.approx(s["forecast_bytes"])


def test_spike_month_follows_the_fitted_line():
    per_day = [10 * MB] * 9 + [460 * MB]
    s, _ = report(daily_downloads("2026-11", per_day))
    # By hand: x = 1..10, mean x 5.5, mean y 55 MB, Sxx 82.5, Sxy 2025 (MB): slope 24.545 MB/day,
    # intercept -80 MB; days 11..30 add sum(-80 + slope*d).
    slope = 2025 / 82.5
    expected = 550 * MB + sum((-80 + slope * d) * MB for d in range(11, 31))
    assert s["forecast_bytes"] == pytest.approx(expected, abs=2)
    assert s["forecast_fit"]["slope_bytes_per_day"] == pytest.approx(slope * MB, rel=1e-9)
    assert s["egress_pct"] == 11.0
    assert {(a["metric"], a["basis"], a["level"]) for a in s["alerts"]} == {("egress_bytes", "forecast", "exceeded")}


def test_empty_month_uses_the_design_average_file():
    s, daily = report([])
    assert (s["egress_bytes"], s["forecast_bytes"], s["files_processed"]) == (0, 0, 0)
    assert s["avg_file_bytes"] == 15 * MB and s["files_remaining"] == 333  # 5 GB / 15 MB
    assert s["alerts"] == [] and s["cost_usd"] == 0 and s["metrics"]["mean_whisper_confidence"] is None
    assert len(daily) == 30 and daily["egress_bytes"].sum() == 0


def test_month_crossing_the_plan_boundary_design_vs_current():
    rows = daily_downloads("2026-11", [2 * GB] * 20)
    s, _ = report(rows, plan="pro", day=20, table="design")  # 50 GB
    assert s["egress_pct"] == 80.0 and s["forecast_bytes"] == 60 * GB and s["forecast_pct"] == 120.0
    assert {(a["basis"], a["level"]) for a in s["alerts"]} == {("now", "warning"), ("forecast", "exceeded")}
    assert s["egress_overage_usd"] == 0 and s["forecast_egress_overage_usd"] == pytest.approx(10 * 0.09)
    assert s["files_remaining"] == 5  # 10 GB left at 2 GB a file
    s2, _ = report(rows, plan="pro", day=20)  # Supabase's current Pro: 250 GB
    assert s2["egress_pct"] == 16.0 and s2["alerts"] == []
    # A finished month over the line: the forecast is the actual, overage is billed.
    past = daily_downloads("2026-10", [2 * GB] * 31)
    s3, _ = report(past, plan="pro", month="2026-10", day=31, table="design", hour=23)
    s4, _ = month_report(to_frame(past), Plans(plan_table="design").limits("pro"), "2026-10", at("2026-11", 5))
    assert s3["days_elapsed"] == 31 and s4["days_elapsed"] == 31
    assert s4["forecast_bytes"] == s4["egress_bytes"] == 62 * GB and s4["forecast_method"].startswith("actual")
    assert s4["cost_by_service"]["supabase_egress_overage"] == pytest.approx(12 * 0.09)
    assert s4["files_remaining"] == 0
    assert {(a["basis"], a["level"]) for a in s4["alerts"]} == {("now", "exceeded"), ("forecast", "exceeded")}


def test_realtime_api_cost_and_monitoring_metrics():
    m = "2026-11"
    rows = [download(m, 1, 10 * MB, processing_s=40.0, confidence=0.8),
            download(m, 2, 10 * MB, processing_s=80.0, confidence=0.6)]
    rows += [dict(kind="realtime_message", service="supabase", bytes=100, calls=5, at=at(m, 2, 9, 0, 1),
                  meta={"connections": 170}) for _ in range(30)]  # 150 messages in one second
    rows += [dict(kind="realtime_message", service="supabase", bytes=0, calls=0, at=at(m, 3),
                  meta={"error": "too_many_connections"}),
             dict(kind="realtime_message", service="supabase", bytes=0, calls=0, at=at(m, 3),
                  meta={"error": "tenant_events"}),
             dict(kind="realtime_message", service="supabase", bytes=10, calls=500, at=at(m, 4),
                  meta={"window_s": 10})]  # 50/s over its window
    rows += [dict(kind="api_call", service="openai", calls=3, retries=1, bytes=2 * MB, cost_usd=0.18, at=at(m, 1)),
             dict(kind="api_call", service="gemini", calls=1, tokens=1200, cost_usd=0.0042, at=at(m, 1), meta={"ok": True}),
             dict(kind="api_call", service="gemini", calls=2, retries=2, tokens=800, cost_usd=0.0021, at=at(m, 2),
                  meta={"ok": False}),
             dict(kind="edge_response", service="supabase", bytes=3000, calls=1, at=at(m, 2)),
             dict(kind="result_download", service="supabase", bytes=40_000, calls=1, at=at(m, 2))]
    s, daily = report(rows, day=4)
    rt = s["realtime"]
    assert rt["peak_connections"] == 170 and rt["connections_pct"] == 85.0
    assert rt["peak_messages_per_s"] == 150.0 and rt["messages_per_s_pct"] == 150.0
    assert rt["connection_failures"] == 2
    assert rt["failures_by_code"] == {"too_many_connections": 1, "tenant_events": 1}
    assert {(a["metric"], a["level"]) for a in s["alerts"] if a["basis"] == "now"} == {
        ("realtime_connections", "warning"), ("realtime_messages_per_s", "exceeded")}
    # api_call bytes go to the API, not to clients: not egress.
    assert s["egress_bytes"] == 20 * MB + 30 * 100 + 10 + 3000 + 40_000
    assert s["egress_by_kind"]["result_download"] == 40_000
    assert s["api_calls"] == {"openai": 3, "gemini": 3} and s["api_calls_total"] == 6
    assert s["retries"] == {"openai": 1, "gemini": 2} and s["tokens"] == {"gemini": 2000}
    assert s["cost_by_service"] == {"openai": 0.18, "gemini": 0.0063} and s["cost_usd"] == pytest.approx(0.1863)
    met = s["metrics"]
    assert met["avg_processing_s"] == 60.0 and met["mean_whisper_confidence"] == 0.7
    assert met["gemini_success_rate"] == 0.5 and met["realtime_connection_failures"] == 2
    assert met["api_call_counts"] == {"openai": 3, "gemini": 3}
    assert daily.loc[1, "realtime_peak_messages_per_s"] == 150.0 and daily.loc[3, "realtime_peak_messages_per_s"] == 50.0


def test_forecast_fallbacks():
    assert forecast_month([], 30).forecast_bytes == 0
    two = forecast_month([10, 30], 30)
    assert two.forecast_bytes == 40 + 28 * 20 and "mean" in two.method
    falling = forecast_month([100, 50, 0, 0], 30)  # a trend below zero adds nothing
    assert falling.forecast_bytes == 150


def test_guard_decision():
    free = Plans().limits("free")
    now = at("2026-11", 10)
    over = {"2026-11-01": 5 * GB}
    assert guard_decision(over, free, now).mode == "refuse"
    assert guard_decision(over, free, now, enforce=False).mode == "compact"
    # 2 GB in 10 days: 40 % now, 6 GB forecast: compact, not refused.
    trend = {f"2026-11-{d:02d}": 200 * MB for d in range(1, 11)}
    d = guard_decision(trend, free, now)
    assert (d.mode, d.egress_pct, d.forecast_pct) == ("compact", 40.0, 120.0)
    assert guard_decision(trend, free, now, guard=False).mode == "normal"
    assert guard_decision({}, free, now).mode == "normal"
    assert guard_decision({"2026-10-31": 50 * GB}, free, now).mode == "normal"  # last month does not count


def test_events_from_a_cloud_result_document():
    sid = str(uuid.uuid4())
    doc = {"session_id": sid, "status": "COMPLETED", "timings": {"ingest": 1.0, "transcribe": 20.5, "startup": 9},
           "transcript": {"language": "ja", "model": "whisper-1", "text": "x", "confidence": 0.9, "segments": []},
           "usage": {"bytes_in": 15 * MB, "bytes_transcoded": 2 * MB, "bytes_out": 30_000,
                     "bytes_sent": {"openai": 2 * MB, "gemini": 9000}, "api_calls": {"openai": 2, "gemini": 1},
                     "retries": {"openai": 1}, "audio_seconds": 1800.0, "audio_minutes_billed": 30.0,
                     "tokens": {"gemini_input": 1500, "gemini_output": 300}, "cost_usd": 0.1872,
                     "cost_by_service": {"openai": 0.18, "gemini": 0.0072}, "storage": "primary"}}
    ev = {(e.kind, e.service): e for e in events_from_document(doc)}
    assert set(ev) == {("storage_download", "tigris"), ("storage_upload", "tigris"), ("storage_held", "tigris"),
                       ("api_call", "openai"), ("api_call", "gemini")}
    dl = ev["storage_download", "tigris"]
    assert (dl.bytes, dl.audio_seconds, dl.session_id) == (15 * MB, 1800.0, sid)
    assert dl.meta["processing_s"] == 21.5 and dl.meta["confidence"] == 0.9
    oa, gm = ev["api_call", "openai"], ev["api_call", "gemini"]
    assert (oa.calls, oa.retries, oa.bytes, oa.cost_usd) == (2, 1, 2 * MB, 0.18)
    assert oa.meta["audio_minutes_billed"] == 30.0
    assert (gm.tokens, gm.meta["tokens"], gm.meta["ok"]) == (1800, {"gemini_input": 1500, "gemini_output": 300}, True)
    # A run that failed while analyzing counts as a Gemini failure.
    failed = {**doc, "status": "FAILED", "error": {"code": "analysis_failed", "message": "x", "stage": "analyze"}}
    assert {e.service: e.meta["ok"] for e in events_from_document(failed) if e.kind == "api_call"} == {
        "openai": True, "gemini": False}


def test_compact_settings_are_a_copy(monkeypatch, tmp_path):
    from vibeinsight.settings import Settings

    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path))
    s = Settings()
    c = compact_settings(s)
    assert (c.transcode.bitrate_kbps, c.status.min_interval_s) == (12, 5.0)
    assert c.transcode.stereo_min_difference > 1  # never two speaker tracks
    assert (s.transcode.bitrate_kbps, s.status.min_interval_s) == (24, 1.0)  # the original is untouched
    assert s.transcode.stereo_min_difference == 0.1
    # what is already more compact stays so: the guard never makes a run bigger or chattier
    monkeypatch.setenv("VIBEINSIGHT_TRANSCODE_BITRATE_KBPS", "8")
    monkeypatch.setenv("VIBEINSIGHT_STATUS_MIN_INTERVAL_S", "9")
    c = compact_settings(Settings())
    assert (c.transcode.bitrate_kbps, c.status.min_interval_s) == (8, 9.0)


def test_status_writes_become_one_realtime_row():
    sid = str(uuid.uuid4())
    doc = {"session_id": sid, "status": "COMPLETED", "usage": {"bytes_in": 10 * MB, "bytes_out": 2000}}
    ev = {e.kind: e for e in events_from_document(doc, status_writes=(7, 2100))}
    assert (ev["status_write"].service, ev["status_write"].calls, ev["status_write"].bytes) == ("realtime", 7, 2100)
    assert ev["status_write"].session_id == sid
    assert "status_write" not in {e.kind for e in events_from_document(doc)}  # no writes: no row
    when = at("2026-11", 3)
    assert {e.at for e in events_from_document(doc, at=when, status_writes=(1, 300))} == {when}
