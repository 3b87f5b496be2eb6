"""Each ledger row against the plan that really pays for it (issue 14): synthetic ledgers where each
provider in turn is the binding constraint, the booking of a run's rows per provider, hand-computed
prices, and the guard refusing only when a billed limit or the budget would be crossed."""

from __future__ import annotations

import uuid

import pytest

from blocks.plans import Plans
from tests.quota_helpers import GB, MB, at, download
from vibeinsight.quota import guard_decision, month_report, to_frame
from vibeinsight.usage import UsageEvent, events_from_document, machine_run_event, machine_usd_per_second

pytestmark = pytest.mark.unit

M = "2026-11"  # 30 days
NRT_PERF_2X = 2 * 0.000012732 * 1.307692308  # Fly's calculator: 2 performance vCPUs, 4 GB included, Tokyo markup


def report(rows, plan="free", day=10, budget=None, table=None):
    return month_report(to_frame(rows), Plans(plan_table=table).limits(plan), M, at(M, day, 23), budget_usd=budget)


def sessions(n_per_day: int, days: int, nbytes: int, service: str, writes: int = 0, write_bytes: int = 0) -> list[dict]:
    """n_per_day sessions a day: the upload's download from `service` and, when writes, the session's
    status writes as Supabase Realtime messages."""
    rows = []
    for d in range(1, days + 1):
        for i in range(n_per_day):
            dl = download(M, d, nbytes, minute=i % 60, service=service)
            rows.append(dl)
            if writes:
                rows.append(dict(session_id=dl["session_id"], kind="status_write", service="realtime",
                                 provider="supabase", calls=writes, bytes=write_bytes, at=dl["at"]))
    return rows


def by_resource(summary):
    return {(x["provider"], x["resource"]): x for x in summary["limits"]}


# --- each provider in turn binds ---

def test_supabase_egress_binds_when_the_fallback_serves_uploads():
    # 300 MB a day of uploads served by Supabase Storage (the fallback), 10 of 30 days: 9 GB forecast.
    s, _ = report(sessions(1, 10, 300 * MB, "supabase"))
    b = s["binding"]
    assert (b["provider"], b["resource"], b["hard"]) == ("supabase", "egress_bytes", True)
    assert b["hits_on"] == "2026-11-17"  # 16 x 300 MB = 4.8 GB, 17 x 300 MB = 5.1 GB
    assert s["egress_bytes"] == 3 * GB and s["forecast_bytes"] == 9 * GB
    assert s["providers"]["supabase"]["usage"]["egress_by_kind"] == {"storage_download": 3 * GB}


def test_the_same_bytes_from_tigris_bind_nothing_and_cost_nothing():
    s, _ = report(sessions(1, 10, 300 * MB, "tigris"))
    assert s["egress_bytes"] == 0 and s["forecast_bytes"] == 0 and s["alerts"] == []
    tg = s["providers"]["tigris"]
    assert tg["usage"]["bytes_read"] == 3 * GB and tg["usage"]["egress_billed_bytes"] == 0
    assert tg["usage"]["class_b_requests"] == 10 and tg["cost_usd"] == 0  # inside the free 100,000 GETs
    assert s["binding"]["hits_on"] is None and "not this month" in s["binding"]["message"]
    assert s["files_remaining"] is None  # no Supabase egress per file: the plan's egress limits nothing


def test_realtime_messages_bind_before_egress():
    # 1,000 sessions a day, 100 status writes each at 300 B: 100,000 messages and 30 MB of egress a day.
    rows = sessions(1000, 10, 15 * MB, "tigris", writes=100, write_bytes=30_000)
    s, _ = report(rows)
    b = s["binding"]
    assert (b["provider"], b["resource"], b["hits_on"]) == ("supabase", "realtime_messages", "2026-11-20")
    assert s["realtime"]["messages"] == 1_000_000 and s["realtime"]["messages_pct"] == 50.0
    lim = by_resource(s)
    assert lim["supabase", "realtime_messages"]["forecast"] == 3_000_000 and lim["supabase", "egress_bytes"]["hits_on"] is None
    assert s["egress_bytes"] == 300 * MB  # the status writes only: 15 GB of Tigris reads are not Supabase's
    assert {(a["metric"], a["basis"], a["level"]) for a in s["alerts"]} == {("realtime_messages", "forecast", "exceeded")}
    per = s["per_session"]
    assert per["sessions"] == 10_000 and per["realtime_messages"] == 100 and per["supabase_egress_bytes"] == 30_000


def test_realtime_connections_peak_binds_on_the_day_it_is_reached():
    rows = sessions(1, 10, 15 * MB, "tigris")
    rows += [dict(kind="realtime_message", service="supabase", calls=1, bytes=100, at=at(M, 3, 9),
                  meta={"connections": 250})]
    s, _ = report(rows)
    b = s["binding"]
    assert (b["provider"], b["resource"], b["hits_on"], b["pct"]) == ("supabase", "realtime_connections", "2026-11-03", 125.0)
    assert any(a["metric"] == "realtime_connections" and a["level"] == "exceeded" for a in s["alerts"])


def _api(service: str, usd_per_day: float, days: int = 10) -> list[dict]:
    return [dict(kind="api_call", service=service, calls=1, cost_usd=usd_per_day, at=at(M, d), meta={"ok": True})
            for d in range(1, days + 1)]


@pytest.mark.parametrize("service", ["openai", "gemini"])
def test_the_budget_binds_driven_by_the_api_that_spends_it(service):
    s, _ = report(sessions(1, 10, 15 * MB, "tigris") + _api(service, 5.0), budget=100.0)
    b = s["binding"]
    assert (b["provider"], b["resource"], b["driven_by"], b["hits_on"]) == ("budget", "cost_usd", service, "2026-11-20")
    assert s["cost_by_provider"] == {service: 50.0} and s["forecast_cost_usd"] == pytest.approx(150.0)
    assert s["per_session"]["cost_usd"] == {service: 5.0}
    assert s["per_session"]["cost_per_audio_hour_usd"] == {service: 10.0}  # 30-minute recordings


def test_the_budget_binds_driven_by_fly_machine_seconds():
    rows = sessions(1, 10, 15 * MB, "tigris")
    rows += [machine_run_event(session_id=r["session_id"], flow_run_id=None, cpu_kind="performance", cpus=2,
                               memory_mb=4096, seconds=36_000, region="nrt", at=r["at"]).model_dump() for r in rows]
    s, _ = report(rows, budget=20.0)
    per_day = 36_000 * NRT_PERF_2X  # $1.199 a day
    b = s["binding"]
    assert (b["provider"], b["driven_by"], b["hits_on"]) == ("budget", "fly", "2026-11-17")  # 16 days $19.2, 17 $20.4
    fly = s["providers"]["fly"]
    assert fly["cost_usd"] == pytest.approx(10 * per_day, rel=1e-6)
    assert fly["usage"]["machine_seconds_by_size"] == {"performance-2x/4096MB": 360_000.0}
    assert s["per_session"]["machine_seconds"] == 36_000


def test_the_budget_binds_driven_by_tigris_storage():
    # 1 TB kept each day at noon for 10 days: held from its row to month end, the first 5 GB-month free.
    rows = [dict(kind="storage_held", service="tigris", bytes=1000 * GB, at=at(M, d)) for d in range(1, 11)]
    s, _ = report(rows, budget=200.0)
    gb_month = sum(1000 * (30.5 - d) / 30 for d in range(1, 11))  # day d at 12:00 to day 30 24:00
    tg = s["providers"]["tigris"]
    assert tg["usage"]["storage_gb_month"] == pytest.approx(gb_month, rel=1e-6)
    assert tg["cost_usd"] == pytest.approx((gb_month - 5) * 0.02, rel=1e-6)
    b = s["binding"]
    assert (b["provider"], b["driven_by"]) == ("budget", "tigris") and b["hits_on"] is not None
    allowance = by_resource(s)["tigris", "storage_gb_month"]
    assert allowance["kind"] == "allowance" and allowance["pct"] > 100  # past the free tier, yet it never binds


def test_paid_plan_overages_are_priced_in_whole_packages():
    rows = [download(M, 1, 260 * GB)]  # Supabase-served: 10 GB past Pro's 250 GB
    rows += [dict(kind="status_write", service="realtime", calls=6_200_000, bytes=1000, at=at(M, 2))]
    s, _ = report(rows, plan="pro", day=30)
    assert s["cost_by_service"]["supabase_egress_overage"] == pytest.approx(10 * 0.09)
    assert s["cost_by_service"]["supabase_realtime_messages_overage"] == 2 * 2.5  # 1.2 M over: 2 packages
    assert s["providers"]["supabase"]["cost_usd"] == pytest.approx(0.9 + 5.0)
    lim = by_resource(s)
    assert lim["supabase", "egress_bytes"]["hard"] is False and lim["supabase", "realtime_messages"]["hard"] is False


# --- a run's rows, booked ---

def _doc(storage="primary", down="tigris", up="tigris"):
    return {"session_id": str(uuid.uuid4()), "status": "COMPLETED", "timings": {"ingest": 1.0},
            "usage": {"bytes_in": 15 * MB, "bytes_out": 30_000, "bytes_sent": {"openai": 2 * MB, "gemini": 9000},
                      "api_calls": {"openai": 6, "gemini": 1, "tigris": 2}, "cost_by_service": {"openai": 0.18, "gemini": 0.01,
                                                                                                "tigris": 0.0001},
                      "audio_seconds": 1800.0, "audio_minutes_billed": 30.0, "tokens": {"gemini_input": 2000},
                      "storage": storage, "download_provider": down, "upload_provider": up}}


def test_a_tigris_run_on_a_fly_machine_books_each_provider():
    doc = _doc()
    ev = {(e.kind, e.provider): e for e in events_from_document(doc, at(M, 1), status_writes=(12, 4000),
                                                                 status_provider="supabase", subscribers=2, fly_region="nrt")}
    assert set(ev) == {("storage_download", "tigris"), ("storage_upload", "tigris"), ("storage_held", "tigris"),
                       ("api_call", "openai"), ("api_call", "gemini"), ("status_write", "supabase"),
                       ("transfer_out", "fly")}
    assert ev["storage_held", "tigris"].bytes == 15 * MB + 30_000  # the upload and the result stay stored
    assert ev["api_call", "openai"].audio_seconds == 1800.0 and ev["api_call", "openai"].cost_usd == 0.18
    rt = ev["status_write", "supabase"]
    assert (rt.calls, rt.bytes, rt.meta["writes"], rt.meta["subscribers"]) == (24, 8000, 12, 2)
    out = ev["transfer_out", "fly"]
    assert out.bytes == 2 * MB + 9000 + 4000  # to the APIs and to Supabase; the Tigris traffic is free
    assert out.cost_usd == pytest.approx(out.bytes / 1e9 * 0.04)  # Asia Pacific outbound
    s, _ = report([e.model_dump() for e in ev.values()], day=1)
    assert s["egress_bytes"] == 8000 and s["egress_by_kind"] == {"status_write": 8000}


def test_a_fallback_run_is_supabase_egress_and_a_local_run_bills_nobody():
    fb = events_from_document(_doc("fallback", "supabase", "supabase"), at(M, 1))  # booked inside the reported month
    assert {(e.kind, e.provider) for e in fb} >= {("storage_download", "supabase"), ("storage_upload", "supabase"),
                                                 ("storage_held", "supabase")}
    s, _ = report([e.model_dump() for e in fb], day=1)
    assert s["egress_bytes"] == 15 * MB and s["providers"]["tigris"]["usage"]["bytes_read"] == 0
    local = events_from_document(_doc("local", "local", "local"), at(M, 1), status_writes=(5, 900))
    assert {e.provider for e in local if e.kind != "api_call"} == {"local"}
    assert not [e for e in local if e.kind in ("storage_held", "transfer_out")]


def test_machine_runs_are_priced_by_size_and_region():
    ev = machine_run_event(session_id=str(uuid.uuid4()), flow_run_id="f", cpu_kind="performance", cpus=2,
                           memory_mb=4096, seconds=600, region="nrt", machine_id="m1")
    assert (ev.provider, ev.kind, ev.seconds, ev.meta["size"]) == ("fly", "machine_run", 600.0, "performance-2x/4096MB")
    assert ev.cost_usd == pytest.approx(600 * NRT_PERF_2X, abs=1e-6)  # booked to the micro-dollar
    # shared-cpu-1x with 1 GB in iad: 1 vCPU + 0.75 GB above the included 256 MB, $6.70 in 30 days (Fly's table)
    assert machine_usd_per_second("shared", 1, 1024, "iad") * 2_592_000 == pytest.approx(6.70, abs=0.005)
    assert machine_usd_per_second("performance", 2, 4096, "iad") * 2_592_000 == pytest.approx(66.00, abs=0.005)
    assert machine_usd_per_second("performance", 2, 4096, "xyz") >= machine_usd_per_second("performance", 2, 4096, "nrt")


def test_every_row_names_a_known_provider():
    assert UsageEvent(kind="status_write", service="realtime").provider == "supabase"
    assert UsageEvent(kind="storage_download", service="s3").provider == "other"
    assert UsageEvent(kind="storage_download").provider == "local"
    with pytest.raises(ValueError, match="provider must be one of"):
        UsageEvent(kind="api_call", service="openai", provider="aws")


# --- the guard ---

def _daily(rows):
    """DAILY_TOTALS per day, as the ledgers sum them."""
    frame = to_frame(rows)
    out: dict[str, dict] = {}
    for _, r in frame.iterrows():
        d = out.setdefault(r["at"].date().isoformat(), {"supabase_egress_bytes": 0, "realtime_messages": 0,
                                                        "cost_usd": 0.0, "sessions": 0})
        supa = r["provider"] == "supabase"
        d["supabase_egress_bytes"] += r["bytes"] if supa and r["kind"] in ("storage_download", "status_write") else 0
        d["realtime_messages"] += r["calls"] if supa and r["kind"] == "status_write" else 0
        d["cost_usd"] += r["cost_usd"]
        d["sessions"] += r["kind"] == "storage_download"
    return out


def test_guard_never_refuses_for_bytes_supabase_does_not_bill():
    free = Plans().limits("free")
    # The design's arithmetic: 334 sessions of 15 MB (5.01 GB) on Free, every upload read from Tigris,
    # each session's 20 status writes (8 KB) the only Supabase egress.
    tigris = sessions(17, 19, 15 * MB, "tigris", writes=20, write_bytes=8000) + sessions(11, 1, 15 * MB, "tigris")
    assert sum(r["kind"] == "storage_download" for r in tigris) == 334
    d = guard_decision(_daily(tigris), free, at(M, 20, 23))
    assert d.mode == "normal" and d.egress_bytes == 17 * 19 * 8000
    # The same sessions served by Supabase Storage: a hard limit, refused before the 5 GB are crossed.
    served = sessions(17, 19, 15 * MB, "supabase") + sessions(10, 1, 15 * MB, "supabase")
    d = guard_decision(_daily(served), free, at(M, 20, 23))
    assert (d.mode, d.resource) == ("refuse", "supabase.egress_bytes") and d.egress_bytes == 333 * 15 * MB
    d = guard_decision(_daily(sessions(15, 20, 15 * MB, "supabase")), free, at(M, 20, 23))  # 4.5 GB: 90 %
    assert (d.mode, d.resource) == ("compact", "supabase.egress_bytes")


def test_guard_on_paid_plans_compacts_but_does_not_refuse_billed_egress():
    pro = Plans().limits("pro")
    d = guard_decision({"2026-11-01": {"supabase_egress_bytes": 260 * GB, "sessions": 10}}, pro, at(M, 20))
    assert (d.mode, d.resource) == ("compact", "supabase.egress_bytes")
    # ...but its overage counts against the budget: $0.90 past a $0.50 budget is refused
    d = guard_decision({"2026-11-01": {"supabase_egress_bytes": 260 * GB, "sessions": 10}}, pro, at(M, 20), budget_usd=0.5)
    assert (d.mode, d.resource) == ("refuse", "budget.cost_usd")


def test_guard_refuses_when_the_next_session_would_cross_the_budget_or_the_message_quota():
    free = Plans().limits("free")
    spent = {"2026-11-05": {"cost_usd": 99.5, "sessions": 100}}  # $0.995 a session
    assert guard_decision(spent, free, at(M, 10), budget_usd=100.0).mode == "refuse"
    assert guard_decision(spent, free, at(M, 10), budget_usd=101.0).mode == "normal"
    assert guard_decision(spent, free, at(M, 10), budget_usd=100.0, enforce=False).mode == "normal"
    near = {"2026-11-05": {"realtime_messages": 1_900_000, "sessions": 100}}  # 19,000 a session: 95 %
    assert (guard_decision(near, free, at(M, 10)).mode, guard_decision(near, free, at(M, 10)).resource) == (
        "compact", "supabase.realtime_messages")
    over = {"2026-11-05": {"realtime_messages": 1_990_000, "sessions": 100}}  # one more crosses 2 M
    assert guard_decision(over, free, at(M, 10)).mode == "refuse"
    assert guard_decision(over, Plans().limits("pro"), at(M, 10)).mode == "normal"  # 40 % of Pro's 5 M, billed past it


@pytest.mark.parametrize(("env", "provider"), [
    ({}, "local"),
    ({"SUPABASE_URL": "https://ref.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}, "supabase"),
    ({"VIBEINSIGHT_STATUS_URL": "postgresql://postgres:pw@db.ref.supabase.co:5432/postgres"}, "supabase"),
    ({"VIBEINSIGHT_STATUS_URL": "postgresql://postgres@127.0.0.1:5432/vi"}, "local"),
])
def test_status_writes_are_supabase_messages_only_when_supabase_stores_the_rows(env, provider, monkeypatch, tmp_path):
    from blocks import registry
    from vibeinsight.settings import Settings

    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "VIBEINSIGHT_STATUS_URL"):
        monkeypatch.delenv(name, raising=False)
    for k, v in {"VIBEINSIGHT_HOME": str(tmp_path), **env}.items():
        monkeypatch.setenv(k, v)
    assert registry.status_provider(Settings()) == provider
