"""Quota maths over the usage_events ledger (pandas; no Prefect, no network).

Units are decimal, as Supabase bills them: 1 GB = 1e9 bytes, 1 MB = 1e6 bytes.

Each row is counted against the plan of the provider that bills it (its `provider`): Supabase
egress is the bytes of Supabase's rows that leave for a client (Storage downloads when the
fallback served them, Edge Function answers, Realtime messages and status writes, result
downloads); reading an upload from Tigris costs Supabase nothing. Each provider's section of the
report has its usage, limits, forecast and cost; the binding constraint is the limit the trend
reaches first.

Forecast for month end (stated in every report as `forecast_method`): an ordinary least-squares
line through the daily egress totals of the days elapsed (today counted as a whole day, days
without events as zero), extended over the remaining days with negative predictions clipped to
zero, added to the month-to-date total. With fewer than 3 days elapsed the mean daily egress is
used instead; a finished month's forecast is its actual total.
"""

from __future__ import annotations

import calendar
import json
import math
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from vibeinsight.settings import Settings
from vibeinsight.usage import PROVIDERS, load_table, provider_of

if TYPE_CHECKING:
    import pandas as pd
# pandas is imported where a report is built: every flow run's process reads the guard from this
# module, and pandas' import (~0.5 CPU-s) is a fifth of what that process pays before it starts.

GB = 1_000_000_000
EGRESS_KINDS = ("storage_download", "edge_response", "realtime_message", "status_write", "result_download")
REALTIME_KINDS = ("status_write", "realtime_message")  # each counted call is one Realtime message
KINDS = EGRESS_KINDS + ("storage_upload", "storage_held", "api_call", "machine_run", "transfer_out")
RATE_LIMIT_ERRORS = ("too_many_channels", "too_many_connections", "too_many_joins", "tenant_events")
COLUMNS = ["session_id", "kind", "service", "provider", "bytes", "calls", "retries", "tokens", "audio_seconds",
           "seconds", "cost_usd", "at"]
# The meta fields the report reads; a ledger extracts them in SQL (as m_<field>), so a million rows
# never become a million parsed JSON objects.
META_FIELDS = ("connections", "window_s", "error", "processing_s", "confidence", "ok", "size", "error_code",
               "failed_calls")
# The kinds whose rows carry each field (None: any kind): a ledger reads a field only where it can be.
META_KINDS = {"connections": ("realtime_message",), "window_s": ("realtime_message",), "error": None,
              "processing_s": ("storage_download",), "confidence": ("storage_download",), "ok": ("api_call",),
              "size": ("machine_run",), "error_code": ("storage_download",), "failed_calls": ("api_call",)}
# What the guard reads per day (UsageLedger.daily_totals), summed by the database.
DAILY_TOTALS = ("supabase_egress_bytes", "realtime_messages", "cost_usd", "sessions")
OLS_MIN_DAYS = 3
CATEGORICAL = ("kind", "provider", "service", "m_size", "m_error")  # a handful of distinct strings each


class QuotaLimits(BaseModel):
    """The figures of one Supabase plan the maths needs (blocks.plans.PlanLimits adds their sources)."""

    table: str = "custom"
    plan: str = "custom"
    egress_limit_bytes: int
    egress_overage_usd_per_gb: float | None = None
    egress_hard_limit: bool = False  # past it the project is restricted (Free), not billed
    realtime_connections: int
    realtime_messages_per_s: int
    realtime_joins_per_s: int = 0
    realtime_channels_per_connection: int = 100
    realtime_messages_month: int | None = None
    realtime_messages_overage_usd_per_million: float | None = None  # None: a hard quota (Free)
    avg_file_bytes_default: int = 15_000_000


class Forecast(BaseModel):
    forecast_bytes: int
    method: str
    slope_bytes_per_day: float
    intercept_bytes: float
    days_used: int


def month_bounds(month: str) -> tuple[datetime, datetime, int]:
    """'YYYY-MM' -> (first instant, first instant of next month, days in month), UTC."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"month must be YYYY-MM, got {month!r}") from exc
    days = calendar.monthrange(year, mon)[1]
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end, days


def current_month(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m")


def days_elapsed(month: str, as_of: datetime) -> int:
    """Days of the month that have begun by as_of (0 before it, all of them after it)."""
    start, end, days = month_bounds(month)
    if as_of < start:
        return 0
    if as_of >= end:
        return days
    return as_of.day


def forecast_month(daily_bytes: list[float] | np.ndarray, days_in_month: int) -> Forecast:
    """Month-end total from the daily totals of the elapsed days (see the module's docstring)."""
    y = np.asarray(daily_bytes, dtype=float)
    n = len(y)
    mtd = float(y.sum())
    if n >= days_in_month:
        return Forecast(forecast_bytes=round(mtd), method="actual: the month is complete",
                        slope_bytes_per_day=0.0, intercept_bytes=0.0, days_used=n)
    if n == 0:
        return Forecast(forecast_bytes=0, method="no days elapsed", slope_bytes_per_day=0.0,
                        intercept_bytes=0.0, days_used=0)
    remaining = np.arange(n + 1, days_in_month + 1, dtype=float)
    if n < OLS_MIN_DAYS:
        mean = mtd / n
        return Forecast(forecast_bytes=round(mtd + mean * len(remaining)),
                        method=f"mean daily egress over {n} day(s) x remaining days (fewer than {OLS_MIN_DAYS} days for a trend)",
                        slope_bytes_per_day=0.0, intercept_bytes=mean, days_used=n)
    x = np.arange(1, n + 1, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    predicted = np.clip(intercept + slope * remaining, 0.0, None)
    return Forecast(forecast_bytes=round(mtd + float(predicted.sum())),
                    method=(f"ordinary least squares line through the daily egress of days 1-{n} "
                            f"(bytes = intercept + slope x day), extended to day {days_in_month}, "
                            "negative days clipped to 0, plus month to date"),
                    slope_bytes_per_day=float(slope), intercept_bytes=float(intercept), days_used=n)


def to_frame(rows: list[dict] | list[tuple] | pd.DataFrame) -> pd.DataFrame:
    """Ledger rows as a typed frame: dicts with a `meta` dict, or tuples in COLUMNS + m_<META_FIELDS> order
    (what the ledgers select), or a frame of either. A row without a provider gets its service's."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
    elif rows and isinstance(rows[0], dict):
        df = pd.DataFrame.from_records(rows, columns=[*COLUMNS, "meta"])
    else:
        df = pd.DataFrame.from_records(rows, columns=[*COLUMNS, *(f"m_{k}" for k in META_FIELDS)])
    if "meta" in df:
        metas = [m if isinstance(m, dict) else (json.loads(m) if isinstance(m, str) and m else {}) for m in df.pop("meta")]
        for k in META_FIELDS:
            df[f"m_{k}"] = pd.Series([m.get(k) for m in metas], index=df.index, dtype=object)
    for col in ("bytes", "calls", "retries", "tokens"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in ("audio_seconds", "seconds", "cost_usd"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0.0).astype(float)
    missing = df["provider"].isna()
    if missing.any():
        df["provider"] = df["provider"].astype(object)
        df.loc[missing, "provider"] = [provider_of(s if isinstance(s, str) else None) for s in df.loc[missing, "service"]]
    # A handful of distinct strings over a million rows: categories keep the frame small and fast.
    for col in CATEGORICAL:
        df[col] = df[col].astype("category")
    for k in ("connections", "window_s", "processing_s", "confidence"):
        df[f"m_{k}"] = pd.to_numeric(df[f"m_{k}"], errors="coerce")
    # JSON false arrives as False (dicts), 0 (SQLite's json_extract) or 'false' (PostgreSQL's ->>).
    df["m_ok"] = ~df["m_ok"].isin([False, 0, "false"])
    if pd.api.types.is_numeric_dtype(df["at"]) and len(df):  # seconds since the epoch
        df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
    else:
        df["at"] = pd.to_datetime(df["at"], utc=True, format="ISO8601")
    return df


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of to_frame (read in batches) as one, its text columns categories again."""
    import pandas as pd

    if not frames:
        return to_frame([])
    if len(frames) == 1:
        return frames[0]
    df = pd.concat(frames, ignore_index=True)
    for col in CATEGORICAL:
        df[col] = df[col].astype("category")
    return df


def _meta_field(df: pd.DataFrame, key: str) -> pd.Series:
    return df[f"m_{key}"]


def _pct(value: float, limit: float | None) -> float | None:
    return round(100.0 * value / limit, 2) if limit else None


def _alert_level(pct: float | None, warn_pct: float, limit_pct: float) -> str | None:
    if pct is None:
        return None
    return "exceeded" if pct >= limit_pct else "warning" if pct >= warn_pct else None


def alerts_for(checks: list[tuple[str, str, float, float | None]], warn_pct: float = 80.0,
               limit_pct: float = 100.0) -> list[dict]:
    """One alert per (metric, basis) at its highest level; checks are (metric, basis, value, limit)."""
    out = []
    for metric, basis, value, limit in checks:
        pct = _pct(value, limit)
        level = _alert_level(pct, warn_pct, limit_pct)
        if level:
            word = "reached" if basis == "now" else "is forecast to reach"
            out.append({"metric": metric, "basis": basis, "level": level, "value": value, "limit": limit,
                        "pct": pct, "message": f"{metric} {word} {pct:.1f} % of the plan's {limit:g}"})
    return out


def _overage_usd(egress: float, limits: QuotaLimits) -> float:
    price = limits.egress_overage_usd_per_gb or 0.0
    return round(max(0.0, egress - limits.egress_limit_bytes) / GB * price, 6)


def _messages_overage_usd(messages: float, limits: QuotaLimits) -> float:
    """Realtime messages past the quota, billed in whole packages of a million."""
    price, quota = limits.realtime_messages_overage_usd_per_million, limits.realtime_messages_month
    if not price or quota is None or messages <= quota:
        return 0.0
    return round(math.ceil((messages - quota) / 1e6) * price, 6)


def _realtime_peaks(rt: pd.DataFrame) -> pd.DataFrame:
    """Per day: peak connections (sampled in meta.connections) and peak messages a second."""
    import pandas as pd

    if rt.empty:
        return pd.DataFrame(columns=["peak_connections", "peak_messages_per_s"], dtype=float)
    window = _meta_field(rt, "window_s").fillna(1.0).clip(lower=1.0)
    per_s = (rt["calls"] / window).groupby(rt["at"].dt.floor("s")).sum()
    msgs = per_s.groupby(per_s.index.date).max()
    conns = _meta_field(rt, "connections").groupby(rt["at"].dt.date).max()
    return pd.DataFrame({"peak_connections": conns, "peak_messages_per_s": msgs})


def _daily(values: pd.Series, when: pd.Series, days: pd.Index, fill: float = 0) -> pd.Series:
    """Daily sums of one month's rows, indexed by `days`. Grouped by the day of the month (an
    integer): a million rows never become a million date objects."""
    import pandas as pd

    sums = values.groupby(when.dt.day.to_numpy()).sum().reindex(range(1, len(days) + 1), fill_value=fill)
    return pd.Series(sums.to_numpy(), index=days)


def _trend(daily: np.ndarray, elapsed: int, ndays: int) -> tuple[Forecast, np.ndarray]:
    """The forecast of a monthly total and its cumulative line: actual to date, then the trend."""
    fc = forecast_month(daily[:elapsed], ndays)
    future = np.arange(1, ndays + 1, dtype=float)
    if fc.days_used >= OLS_MIN_DAYS:
        trend = np.clip(fc.intercept_bytes + fc.slope_bytes_per_day * future, 0.0, None)
    else:
        trend = np.full(ndays, fc.intercept_bytes)
    return fc, np.where(future <= elapsed, daily.astype(float), trend).cumsum()


def _crossing(line: np.ndarray, limit: float | None, start: datetime) -> str | None:
    """The first day the cumulative line reaches the limit (YYYY-MM-DD), or None this month."""
    if not limit:
        return None
    hit = np.flatnonzero(line >= limit)
    return (start.date() + timedelta(days=int(hit[0]))).isoformat() if len(hit) else None


def _limit(provider: str, resource: str, unit: str, used: float, limit: float | None, *, kind: str,
           hard: bool, forecast: float | None = None, hits_on: str | None = None) -> dict[str, Any]:
    """One limited resource of one provider: `monthly` (a total the month may not pass), `peak`
    (a rate or a concurrent count) or `allowance` (free usage; past it the provider bills)."""
    return {"provider": provider, "resource": resource, "unit": unit, "kind": kind, "hard": hard,
            "used": round(float(used), 6), "limit": limit, "pct": _pct(used, limit),
            "forecast": None if forecast is None else round(float(forecast), 6),
            "forecast_pct": _pct(forecast, limit) if forecast is not None else None, "hits_on": hits_on}


def _tigris(df: pd.DataFrame, end: datetime, ndays: int, elapsed: int, prices: dict) -> tuple[dict, list[dict], float, float]:
    """Tigris: GB-month held (each stored byte held from its row to month end: the pipeline deletes
    nothing; objects of earlier months are not in this month's rows), Class A (PUT) and Class B
    (GET) requests, its free allowances, and the cost past them now and forecast."""
    t = prices.get("tigris", {})

    def fig(key: str, default: float = 0.0) -> float:
        v = t.get(key, default)
        return float(v["value"] if isinstance(v, dict) else v)

    tg = df[df["provider"] == "tigris"]
    held = tg[tg["kind"] == "storage_held"]
    month_s = ndays * 86400.0
    left_s = (end - held["at"]).dt.total_seconds().clip(lower=0.0)
    gb_month = float((held["bytes"] * left_s).sum() / month_s / GB)
    class_a = int(tg.loc[tg["kind"] == "storage_upload", "calls"].sum())
    class_b = int(tg.loc[tg["kind"] == "storage_download", "calls"].sum())
    scale = ndays / elapsed if elapsed else 1.0  # requests follow the month's pace

    def usd(gbm: float, a: float, b: float) -> float:
        return round(max(0.0, gbm - fig("free_storage_gb_month")) * fig("storage_usd_per_gb_month")
                     + max(0.0, a - fig("free_class_a_requests")) / 1000 * fig("per_1000_put")
                     + max(0.0, b - fig("free_class_b_requests")) / 1000 * fig("per_1000_get"), 6)

    # New bytes at the month's pace are held, on average, half of the days left.
    new_gbm = float(held["bytes"].sum()) * (scale - 1) * ((ndays - elapsed) / 2 / ndays) / GB if elapsed else 0.0
    usage = {"storage_gb_month": round(gb_month, 6), "bytes_stored": int(held["bytes"].sum()),
             "class_a_requests": class_a, "class_b_requests": class_b,
             "bytes_read": int(tg.loc[tg["kind"] == "storage_download", "bytes"].sum()), "egress_billed_bytes": 0}
    allowances = [
        _limit("tigris", "storage_gb_month", "GB-month", gb_month, fig("free_storage_gb_month") or None,
               kind="allowance", hard=False, forecast=gb_month + new_gbm),
        _limit("tigris", "class_a_requests", "requests", class_a, fig("free_class_a_requests") or None,
               kind="allowance", hard=False, forecast=class_a * scale),
        _limit("tigris", "class_b_requests", "requests", class_b, fig("free_class_b_requests") or None,
               kind="allowance", hard=False, forecast=class_b * scale)]
    return usage, allowances, usd(gb_month, class_a, class_b), usd(gb_month + new_gbm, class_a * scale, class_b * scale)


def month_report(events: pd.DataFrame, limits: QuotaLimits, month: str, as_of: datetime | None = None,
                 warn_pct: float = 80.0, limit_pct: float = 100.0, *, prices: dict | None = None,
                 budget_usd: float | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """The month's summary (JSON-ready dict, a section per provider) and its daily table."""
    import pandas as pd

    from vibeinsight.metrics import live_metrics  # it builds on this module's constants

    prices = prices or load_table()
    start, end, ndays = month_bounds(month)
    as_of = as_of or datetime.now(timezone.utc)
    elapsed = days_elapsed(month, as_of)
    inside = (events["at"] >= start) & (events["at"] < end)
    df = events if inside.all() else events[inside]  # a ledger's read is the month already: no copy
    days = pd.Index([date(start.year, start.month, d) for d in range(1, ndays + 1)], name="date")
    supa = df["provider"] == "supabase"

    egress_rows = df[supa & df["kind"].isin(EGRESS_KINDS)]
    msg_rows = df[supa & df["kind"].isin(REALTIME_KINDS)]
    downloads = df[(df["kind"] == "storage_download") & df["session_id"].notna()]
    api = df[df["kind"] == "api_call"]
    rt = df[df["kind"] == "realtime_message"]
    machines = df[df["kind"] == "machine_run"]
    peaks = _realtime_peaks(rt).reindex(days)

    daily = pd.DataFrame({
        "egress_bytes": _daily(egress_rows["bytes"], egress_rows["at"], days).astype("int64"),
        "realtime_messages": _daily(msg_rows["calls"], msg_rows["at"], days).astype("int64"),
        "files_processed": pd.Series(downloads.groupby(downloads["at"].dt.day.to_numpy())["session_id"].nunique()
                                     .reindex(range(1, ndays + 1), fill_value=0).to_numpy(), index=days).astype("int64"),
        "api_calls": _daily(api["calls"], api["at"], days).astype("int64"),
        "retries": _daily(df["retries"], df["at"], days).astype("int64"),
        "audio_minutes": (_daily(downloads["audio_seconds"], downloads["at"], days, 0.0) / 60).round(3),
        "tokens": _daily(df["tokens"], df["at"], days).astype("int64"),
        "machine_seconds": _daily(machines["seconds"], machines["at"], days, 0.0).round(3),
        "cost_usd": _daily(df["cost_usd"], df["at"], days, 0.0).round(6),
        "realtime_peak_connections": peaks["peak_connections"],
        "realtime_peak_messages_per_s": peaks["peak_messages_per_s"],
    }, index=days)
    fc, egress_line = _trend(daily["egress_bytes"].to_numpy(), elapsed, ndays)
    fc_msgs, msgs_line = _trend(daily["realtime_messages"].to_numpy(), elapsed, ndays)
    fc_cost, cost_line = _trend(daily["cost_usd"].to_numpy(), elapsed, ndays)
    daily["egress_cum_bytes"] = daily["egress_bytes"].cumsum()
    daily["egress_limit_bytes"] = limits.egress_limit_bytes
    daily["egress_pct"] = (100.0 * daily["egress_cum_bytes"] / limits.egress_limit_bytes).round(2)
    daily["realtime_messages_cum"] = daily["realtime_messages"].cumsum().astype(float)
    daily["cost_cum_usd"] = daily["cost_usd"].cumsum()
    future = np.arange(1, ndays + 1)
    for col, line in (("forecast_cum_bytes", egress_line), ("realtime_messages_forecast_cum", msgs_line),
                      ("cost_forecast_cum_usd", cost_line)):
        daily[col] = np.where(future >= elapsed, line, np.nan) if elapsed else np.nan
    daily.loc[daily.index[elapsed:], ["egress_cum_bytes", "egress_pct", "realtime_messages_cum", "cost_cum_usd"]] = np.nan
    daily = daily.reset_index()

    egress = int(egress_rows["bytes"].sum())
    messages = int(msg_rows["calls"].sum())
    files = int(downloads["session_id"].nunique())
    avg_file = egress / files if files else float(limits.avg_file_bytes_default)
    files_remaining = max(0, math.floor(max(0, limits.egress_limit_bytes - egress) / avg_file)) if avg_file else None
    api_by = {k: int(v) for k, v in api.groupby("service", observed=True)["calls"].sum().items() if v}
    retries_by = {k: int(v) for k, v in df[df["retries"] > 0].groupby("service", observed=True)["retries"].sum().items()}
    tokens_by = {k: int(v) for k, v in df[df["tokens"] > 0].groupby("service", observed=True)["tokens"].sum().items()}
    cost_by = {k: round(float(v), 6) for k, v in df[df["cost_usd"] != 0].groupby("service", observed=True)["cost_usd"].sum().items()}
    overage, overage_fc = _overage_usd(egress, limits), _overage_usd(fc.forecast_bytes, limits)
    msgs_overage, msgs_overage_fc = _messages_overage_usd(messages, limits), _messages_overage_usd(fc_msgs.forecast_bytes, limits)
    if overage:
        cost_by["supabase_egress_overage"] = overage
    if msgs_overage:
        cost_by["supabase_realtime_messages_overage"] = msgs_overage
    peak_conn = float(np.nan_to_num(peaks["peak_connections"].max(), nan=0.0))
    peak_msgs = float(np.nan_to_num(peaks["peak_messages_per_s"].max(), nan=0.0))
    errors = _meta_field(df, "error")
    failures = errors[errors.isin(RATE_LIMIT_ERRORS)]
    # --- per provider: usage, limits, cost now and forecast ---
    booked = df.groupby("provider", observed=True)["cost_usd"].sum()
    scale = ndays / elapsed if elapsed else 1.0
    tig_usage, tig_allowances, tig_cost, tig_cost_fc = _tigris(df, end, ndays, elapsed, prices)
    sizes = machines.groupby("m_size", observed=True)["seconds"].sum()
    transfer = df[df["kind"] == "transfer_out"]
    cost_now = {p: round(float(booked.get(p, 0.0)), 6) for p in PROVIDERS}
    cost_now["supabase"] = round(cost_now["supabase"] + overage + msgs_overage, 6)
    cost_now["tigris"] = round(cost_now["tigris"] + tig_cost, 6)
    cost_fc = {p: round(v * scale, 6) for p, v in cost_now.items()}
    cost_fc["supabase"] = round(float(booked.get("supabase", 0.0)) * scale + overage_fc + msgs_overage_fc, 6)
    cost_fc["tigris"] = round(float(booked.get("tigris", 0.0)) * scale + tig_cost_fc, 6)

    supabase_limits = [
        _limit("supabase", "egress_bytes", "bytes", egress, limits.egress_limit_bytes, kind="monthly",
               hard=limits.egress_hard_limit, forecast=fc.forecast_bytes,
               hits_on=_crossing(egress_line, limits.egress_limit_bytes, start)),
        _limit("supabase", "realtime_messages", "messages", messages, limits.realtime_messages_month, kind="monthly",
               hard=limits.realtime_messages_overage_usd_per_million is None, forecast=fc_msgs.forecast_bytes,
               hits_on=_crossing(msgs_line, limits.realtime_messages_month, start)),
        _limit("supabase", "realtime_connections", "connections", peak_conn, limits.realtime_connections,
               kind="peak", hard=True, hits_on=_first_peak(peaks["peak_connections"], limits.realtime_connections)),
        _limit("supabase", "realtime_messages_per_s", "messages/s", peak_msgs, limits.realtime_messages_per_s,
               kind="peak", hard=True, hits_on=_first_peak(peaks["peak_messages_per_s"], limits.realtime_messages_per_s)),
    ]
    # The budget's line: booked cost (actual, then its trend) plus what the report prices itself
    # (Tigris past its allowances, Supabase overages), spread evenly over the month.
    priced_fc = sum(cost_fc.values()) - float(booked.sum()) * scale
    budget_line = cost_line + priced_fc * np.arange(1, ndays + 1) / ndays
    budget_limits = [] if not budget_usd else [
        _limit("budget", "cost_usd", "USD", sum(cost_now.values()), budget_usd, kind="monthly", hard=True,
               forecast=sum(cost_fc.values()), hits_on=_crossing(budget_line, budget_usd, start))]
    usage = {
        "supabase": {"egress_bytes": egress, "egress_by_kind": {
                         k: int(v) for k, v in egress_rows.groupby("kind", observed=True)["bytes"].sum().items() if v},
                     "realtime_messages": messages, "peak_connections": int(peak_conn),
                     "peak_messages_per_s": round(peak_msgs, 3), "overage_usd": round(overage + msgs_overage, 6)},
        "tigris": tig_usage,
        "fly": {"machine_seconds": round(float(machines["seconds"].sum()), 3),
                "machine_seconds_by_size": {k: round(float(v), 3) for k, v in sizes.items()},
                "machine_runs": int(machines["calls"].sum()), "outbound_bytes": int(transfer["bytes"].sum())},
        "openai": {"calls": api_by.get("openai", 0), "audio_minutes_billed":
                   round(float(api.loc[api["service"] == "openai", "audio_seconds"].sum()) / 60, 3)},
        "gemini": {"calls": api_by.get("gemini", 0), "tokens": tokens_by.get("gemini", 0)},
        "local": {"bytes_read": int(df.loc[(df["provider"] == "local") & (df["kind"] == "storage_download"), "bytes"].sum())},
        "other": {"bytes": int(df.loc[df["provider"] == "other", "bytes"].sum())},
    }
    all_limits = supabase_limits + tig_allowances + budget_limits
    providers = {p: {"usage": usage[p], "limits": [x for x in all_limits if x["provider"] == p],
                     "cost_usd": cost_now[p], "forecast_cost_usd": cost_fc[p]} for p in PROVIDERS}
    sessions = files
    audio_hours = float(downloads["audio_seconds"].sum()) / 3600

    summary: dict[str, Any] = {
        "month": month, "as_of": as_of.isoformat(), "plan": limits.plan, "plan_table": limits.table,
        "days_in_month": ndays, "days_elapsed": elapsed, "units": "decimal: 1 GB = 1e9 bytes",
        "egress_scope": "Supabase egress: bytes of rows Supabase bills (provider supabase); Tigris reads are not",
        "egress_bytes": egress, "egress_gb": round(egress / GB, 4),
        "egress_limit_bytes": limits.egress_limit_bytes, "egress_pct": _pct(egress, limits.egress_limit_bytes),
        "egress_by_kind": usage["supabase"]["egress_by_kind"],
        "forecast_bytes": fc.forecast_bytes, "forecast_pct": _pct(fc.forecast_bytes, limits.egress_limit_bytes),
        "forecast_method": fc.method,
        "forecast_fit": {"slope_bytes_per_day": round(fc.slope_bytes_per_day, 3),
                         "intercept_bytes": round(fc.intercept_bytes, 3), "days_used": fc.days_used},
        "files_processed": files, "avg_file_bytes": round(avg_file),
        "avg_file_bytes_source": "Supabase egress / files_processed" if files else "plans file default (design: 30 min ~ 15 MB)",
        "files_remaining": files_remaining,
        "realtime": {
            "peak_connections": int(peak_conn), "connections_limit": limits.realtime_connections,
            "connections_pct": _pct(peak_conn, limits.realtime_connections),
            "peak_messages_per_s": round(peak_msgs, 3), "messages_per_s_limit": limits.realtime_messages_per_s,
            "messages_per_s_pct": _pct(peak_msgs, limits.realtime_messages_per_s),
            "messages": messages, "messages_limit": limits.realtime_messages_month,
            "messages_pct": _pct(messages, limits.realtime_messages_month),
            "connection_failures": int(len(failures)),
            "failures_by_code": {k: int(v) for k, v in failures.value_counts().items() if v},
        },
        "api_calls": api_by, "api_calls_total": int(sum(api_by.values())),
        "retries": retries_by, "retries_total": int(df["retries"].sum()) if len(df) else 0,
        "audio_minutes": round(audio_hours * 60, 3),
        "tokens": tokens_by, "tokens_total": int(df["tokens"].sum()) if len(df) else 0,
        "cost_usd": round(sum(cost_now.values()), 6), "cost_by_service": cost_by,
        "cost_by_provider": {p: v for p, v in cost_now.items() if v},
        "forecast_cost_usd": round(sum(cost_fc.values()), 6), "budget_usd": budget_usd,
        "egress_overage_usd": overage, "forecast_egress_overage_usd": overage_fc,
        "providers": providers,
        "limits": all_limits,
        "binding": binding_constraint(all_limits, cost_fc),
        "per_session": {
            "sessions": sessions, "audio_hours": round(audio_hours, 4),
            "cost_usd": {p: round(v / sessions, 6) for p, v in cost_now.items() if v} if sessions else {},
            "cost_usd_total": round(sum(cost_now.values()) / sessions, 6) if sessions else None,
            "cost_per_audio_hour_usd": {p: round(v / audio_hours, 6) for p, v in cost_now.items() if v} if audio_hours else {},
            "cost_per_audio_hour_usd_total": round(sum(cost_now.values()) / audio_hours, 6) if audio_hours else None,
            "supabase_egress_bytes": round(egress / sessions, 1) if sessions else None,
            "realtime_messages": round(messages / sessions, 3) if sessions else None,
            "tigris_bytes_stored": round(tig_usage["bytes_stored"] / sessions, 1) if sessions else None,
            "machine_seconds": round(usage["fly"]["machine_seconds"] / sessions, 3) if sessions else None,
        },
        "metrics": live_metrics(df),  # the same block `vibeinsight metrics` prints, over the month
    }
    checks = [("egress_bytes", "now", egress, limits.egress_limit_bytes),
              ("egress_bytes", "forecast", fc.forecast_bytes, limits.egress_limit_bytes),
              ("realtime_connections", "now", peak_conn, limits.realtime_connections),
              ("realtime_messages_per_s", "now", peak_msgs, limits.realtime_messages_per_s)]
    if limits.realtime_messages_month:
        checks += [("realtime_messages", "now", messages, limits.realtime_messages_month),
                   ("realtime_messages", "forecast", fc_msgs.forecast_bytes, limits.realtime_messages_month)]
    if budget_usd:
        checks += [("budget_usd", "now", summary["cost_usd"], budget_usd),
                   ("budget_usd", "forecast", summary["forecast_cost_usd"], budget_usd)]
    summary["alerts"] = alerts_for(checks, warn_pct, limit_pct)
    return summary, daily


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def _first_peak(peaks: pd.Series, limit: float) -> str | None:
    over = peaks[peaks >= limit] if limit else peaks.iloc[0:0]
    return over.index[0].isoformat() if len(over) else None


def binding_constraint(limits: list[dict], forecast_cost: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The provider limit the month reaches first: the earliest day a monthly total (actual, then
    the trend) or a peak reaches its limit; when none does this month, the nearest one by its
    forecast (or peak) share. Free allowances only start billing and never bind. When the budget
    binds, `driven_by` names the provider with the largest forecast cost."""
    candidates = [x for x in limits if x["kind"] != "allowance" and x["limit"]]
    if not candidates:
        return None
    hit = [x for x in candidates if x["hits_on"]]
    if hit:
        first = min(hit, key=lambda x: (x["hits_on"], -(x["forecast_pct"] or x["pct"] or 0)))
        when = f"on {first['hits_on']}"
    else:
        first = max(candidates, key=lambda x: x["forecast_pct"] if x["forecast_pct"] is not None else (x["pct"] or 0))
        when = "not this month at the current trend"
    share = first["forecast_pct"] if first["forecast_pct"] is not None else first["pct"]
    driven_by = first["provider"]
    if first["provider"] == "budget" and forecast_cost:
        driven_by = max(forecast_cost, key=forecast_cost.get)
    return {"provider": first["provider"], "resource": first["resource"], "limit": first["limit"],
            "unit": first["unit"], "hard": first["hard"], "hits_on": first["hits_on"], "pct": first["pct"],
            "forecast_pct": first["forecast_pct"], "driven_by": driven_by,
            "message": f"{first['provider']} {first['resource']} ({first['limit']:g} {first['unit']}) is reached {when}"
                       f" ({share or 0:.1f} % {'forecast' if first['forecast_pct'] is not None else 'peak'})"
                       + (f", driven by {driven_by}" if driven_by != first["provider"] else "")}


class GuardDecision(BaseModel):
    """What new runs do given this month's ledger: normal, compact (Supabase egress or Realtime
    messages near the plan) or refuse (a hard provider limit or the budget would be crossed)."""

    mode: str  # "normal" | "compact" | "refuse"
    month: str
    resource: str | None = None  # provider.resource that decided it
    egress_bytes: int
    forecast_bytes: int
    egress_limit_bytes: int
    egress_pct: float | None
    forecast_pct: float | None
    realtime_messages: int = 0
    realtime_messages_pct: float | None = None
    cost_usd: float = 0.0
    budget_usd: float | None = None
    reason: str


def guard_decision(daily: dict[str, dict[str, float] | int], limits: QuotaLimits, as_of: datetime, *,
                   guard: bool = True, enforce: bool = True, limit_pct: float = 100.0, warn_pct: float = 80.0,
                   budget_usd: float | None = None) -> GuardDecision:
    """daily maps 'YYYY-MM-DD' of as_of's month to its DAILY_TOTALS (a bare number: Supabase egress
    bytes). Refuses only when this session would cross a hard limit (Free's egress or Realtime
    message quota) or the budget, at the month's cost per session; never for bytes Supabase does not bill."""
    month = current_month(as_of)
    _, _, ndays = month_bounds(month)
    elapsed = days_elapsed(month, as_of)
    rows = [daily.get(f"{month}-{d:02d}", {}) for d in range(1, elapsed + 1)]
    rows = [r if isinstance(r, dict) else {"supabase_egress_bytes": r} for r in rows]
    series = {k: [float(r.get(k, 0) or 0) for r in rows] for k in DAILY_TOTALS}
    egress, messages = sum(series["supabase_egress_bytes"]), sum(series["realtime_messages"])
    sessions = sum(series["sessions"])
    fc = forecast_month(series["supabase_egress_bytes"], ndays)
    fc_msgs = forecast_month(series["realtime_messages"], ndays)
    # Paid plans bill past their quotas: that spend counts against the budget.
    cost = sum(series["cost_usd"]) + _overage_usd(egress, limits) + _messages_overage_usd(messages, limits)
    pct, fpct = _pct(egress, limits.egress_limit_bytes), _pct(fc.forecast_bytes, limits.egress_limit_bytes)
    mpct = _pct(messages, limits.realtime_messages_month)
    fmpct = _pct(fc_msgs.forecast_bytes, limits.realtime_messages_month)
    common = dict(month=month, egress_bytes=int(egress), forecast_bytes=fc.forecast_bytes,
                  egress_limit_bytes=limits.egress_limit_bytes, egress_pct=pct, forecast_pct=fpct,
                  realtime_messages=int(messages), realtime_messages_pct=mpct, cost_usd=round(cost, 6),
                  budget_usd=budget_usd)
    share = limit_pct / 100.0

    def per_session(total: float) -> float:
        return total / sessions if sessions else 0.0

    hard = [("supabase.egress_bytes", egress, per_session(egress), limits.egress_limit_bytes, limits.egress_hard_limit,
             f"{limits.plan} plan's {limits.egress_limit_bytes / GB:g} GB of Supabase egress"),
            ("supabase.realtime_messages", messages, per_session(messages), limits.realtime_messages_month,
             limits.realtime_messages_overage_usd_per_million is None,
             f"{limits.plan} plan's {limits.realtime_messages_month or 0:,} Realtime messages"),
            ("budget.cost_usd", cost, per_session(sum(series["cost_usd"])), budget_usd, True,
             f"budget of ${budget_usd or 0:g} (VIBEINSIGHT_BUDGET_USD)")]
    for resource, used, next_one, limit, is_hard, what in hard:
        if enforce and is_hard and limit and (used >= limit * share or used + next_one > limit * share):
            return GuardDecision(mode="refuse", resource=resource, reason=(
                f"this month has used {used:,.0f} of the {what} ({100 * used / limit:.1f} %); one more session "
                f"(about {next_one:,.0f}) would cross it"), **common)
    # Near: at the warning share now, or forecast past the limit by month end.
    for name, p, threshold, basis in (("supabase.egress_bytes", pct, warn_pct, "now"),
                                      ("supabase.egress_bytes", fpct, limit_pct, "forecast for month end"),
                                      ("supabase.realtime_messages", mpct, warn_pct, "now"),
                                      ("supabase.realtime_messages", fmpct, limit_pct, "forecast for month end")):
        if guard and p is not None and p >= threshold:
            return GuardDecision(mode="compact", resource=name, reason=(
                f"{name} is at {p:.1f} % of the {limits.plan} plan ({basis})"), **common)
    return GuardDecision(mode="normal", reason="within plan and budget", **common)


def user_share_exceeded(used: int, limits: QuotaLimits, share_pct: float) -> str | None:
    """Why one user's new session is refused (their Supabase egress this month, `used` bytes, has
    reached `share_pct` % of the plan's), or None. The project-wide guard_decision still applies to everyone."""
    allowed = limits.egress_limit_bytes * share_pct / 100
    if limits.egress_limit_bytes and used >= allowed:
        return (f"your egress this month is {used / GB:.2f} GB, the {share_pct:g} % share of the {limits.plan} "
                f"plan's {limits.egress_limit_bytes / GB:g} GB one user may use")
    return None


def compact_settings(settings: Settings) -> Settings:
    """What a run under the guard uses: the most compact transcode (Opus at the compact bitrate,
    one mono mix even for stereo), the slower status interval (fewer Realtime messages, coarser
    progress) and result documents without indentation."""
    q = settings.quota.model_copy(update={"compact_results": True})
    transcode = settings.transcode.model_copy(update={
        "bitrate_kbps": min(settings.transcode.bitrate_kbps, q.compact_bitrate_kbps),
        "stereo_min_difference": 2.0,  # a side/mid ratio never reaches 2: always one mix
    })
    status = settings.status.model_copy(update={
        "min_interval_s": max(settings.status.min_interval_s, q.compact_status_interval_s)})
    return settings.model_copy(update={"transcode": transcode, "status": status, "quota": q})
