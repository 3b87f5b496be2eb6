"""Quota maths over the usage_events ledger (pandas; no Prefect, no network).

Units are decimal, as Supabase bills them: 1 GB = 1e9 bytes, 1 MB = 1e6 bytes.

Egress counted against the plan is every byte that leaves for a client: storage downloads,
Edge Function responses, Realtime messages and status writes, result downloads.

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
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from vibeinsight.settings import Settings

GB = 1_000_000_000
EGRESS_KINDS = ("storage_download", "edge_response", "realtime_message", "status_write", "result_download")
KINDS = EGRESS_KINDS + ("storage_upload", "api_call")
RATE_LIMIT_ERRORS = ("too_many_channels", "too_many_connections", "too_many_joins", "tenant_events")
COLUMNS = ["session_id", "kind", "service", "bytes", "calls", "retries", "tokens", "audio_seconds", "cost_usd", "at"]
# The meta fields the report reads; a ledger extracts them in SQL (as m_<field>), so 100,000 rows
# never become 100,000 parsed JSON objects.
META_FIELDS = ("connections", "window_s", "error", "processing_s", "confidence", "ok")
OLS_MIN_DAYS = 3


class QuotaLimits(BaseModel):
    """The figures of one plan the maths needs (blocks.plans.PlanLimits adds their sources)."""

    table: str = "custom"
    plan: str = "custom"
    egress_limit_bytes: int
    egress_overage_usd_per_gb: float | None = None
    realtime_connections: int
    realtime_messages_per_s: int
    realtime_joins_per_s: int = 0
    realtime_channels_per_connection: int = 100
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
    (what the ledgers select), or a frame of either."""
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
    for col in ("audio_seconds", "cost_usd"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0.0).astype(float)
    for k in ("connections", "window_s", "processing_s", "confidence"):
        df[f"m_{k}"] = pd.to_numeric(df[f"m_{k}"], errors="coerce")
    # JSON false arrives as False (dicts), 0 (SQLite's json_extract) or 'false' (PostgreSQL's ->>).
    df["m_ok"] = ~df["m_ok"].isin([False, 0, "false"])
    if pd.api.types.is_numeric_dtype(df["at"]) and len(df):  # seconds since the epoch
        df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
    else:
        df["at"] = pd.to_datetime(df["at"], utc=True, format="ISO8601")
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


def _realtime_peaks(rt: pd.DataFrame) -> pd.DataFrame:
    """Per day: peak connections (sampled in meta.connections) and peak messages a second."""
    if rt.empty:
        return pd.DataFrame(columns=["peak_connections", "peak_messages_per_s"], dtype=float)
    window = _meta_field(rt, "window_s").fillna(1.0).clip(lower=1.0)
    per_s = (rt["calls"] / window).groupby(rt["at"].dt.floor("s")).sum()
    msgs = per_s.groupby(per_s.index.date).max()
    conns = _meta_field(rt, "connections").groupby(rt["at"].dt.date).max()
    return pd.DataFrame({"peak_connections": conns, "peak_messages_per_s": msgs})


def month_report(events: pd.DataFrame, limits: QuotaLimits, month: str, as_of: datetime | None = None,
                 warn_pct: float = 80.0, limit_pct: float = 100.0) -> tuple[dict[str, Any], pd.DataFrame]:
    """The month's summary (JSON-ready dict) and its daily table."""
    start, end, ndays = month_bounds(month)
    as_of = as_of or datetime.now(timezone.utc)
    elapsed = days_elapsed(month, as_of)
    df = events[(events["at"] >= start) & (events["at"] < end)] if len(events) else events
    day = df["at"].dt.date
    days = pd.Index([date(start.year, start.month, d) for d in range(1, ndays + 1)], name="date")

    egress_mask = df["kind"].isin(EGRESS_KINDS)
    egress_daily = df.loc[egress_mask, "bytes"].groupby(day[egress_mask]).sum().reindex(days, fill_value=0)
    downloads = df[(df["kind"] == "storage_download") & df["session_id"].notna()]
    files_daily = downloads.groupby(downloads["at"].dt.date)["session_id"].nunique().reindex(days, fill_value=0)
    api = df[df["kind"] == "api_call"]
    rt = df[df["kind"] == "realtime_message"]
    peaks = _realtime_peaks(rt).reindex(days)

    daily = pd.DataFrame({
        "egress_bytes": egress_daily.astype("int64"),
        "files_processed": files_daily.astype("int64"),
        "api_calls": api["calls"].groupby(api["at"].dt.date).sum().reindex(days, fill_value=0).astype("int64"),
        "retries": df["retries"].groupby(day).sum().reindex(days, fill_value=0).astype("int64"),
        "audio_minutes": (downloads["audio_seconds"].groupby(downloads["at"].dt.date).sum()
                          .reindex(days, fill_value=0.0) / 60).round(3),
        "tokens": df["tokens"].groupby(day).sum().reindex(days, fill_value=0).astype("int64"),
        "cost_usd": df["cost_usd"].groupby(day).sum().reindex(days, fill_value=0.0).round(6),
        "realtime_peak_connections": peaks["peak_connections"],
        "realtime_peak_messages_per_s": peaks["peak_messages_per_s"],
    }, index=days)
    daily["egress_cum_bytes"] = daily["egress_bytes"].cumsum()
    daily["egress_limit_bytes"] = limits.egress_limit_bytes
    daily["egress_pct"] = (100.0 * daily["egress_cum_bytes"] / limits.egress_limit_bytes).round(2)
    fc = forecast_month(daily["egress_bytes"].to_numpy()[:elapsed], ndays)
    # The forecast line: actual cumulative egress to date, then the fitted trend.
    future = np.arange(1, ndays + 1, dtype=float)
    if fc.days_used >= OLS_MIN_DAYS:
        trend = np.clip(fc.intercept_bytes + fc.slope_bytes_per_day * future, 0.0, None)
    else:
        trend = np.full(ndays, fc.intercept_bytes)
    line = np.where(future <= elapsed, daily["egress_bytes"].to_numpy(dtype=float), trend).cumsum()
    daily["forecast_cum_bytes"] = np.where(future >= elapsed, line, np.nan) if elapsed else np.nan
    daily.loc[daily.index[elapsed:], ["egress_cum_bytes", "egress_pct"]] = np.nan
    daily = daily.reset_index()

    egress = int(daily["egress_bytes"].sum())
    files = int(downloads["session_id"].nunique())
    avg_file = egress / files if files else float(limits.avg_file_bytes_default)
    files_remaining = max(0, math.floor(max(0, limits.egress_limit_bytes - egress) / avg_file)) if avg_file else None
    api_by = {k: int(v) for k, v in api.groupby("service")["calls"].sum().items()}
    retries_by = {k: int(v) for k, v in df[df["retries"] > 0].groupby("service")["retries"].sum().items()}
    tokens_by = {k: int(v) for k, v in df[df["tokens"] > 0].groupby("service")["tokens"].sum().items()}
    cost_by = {k: round(float(v), 6) for k, v in df[df["cost_usd"] != 0].groupby("service")["cost_usd"].sum().items()}
    overage, overage_fc = _overage_usd(egress, limits), _overage_usd(fc.forecast_bytes, limits)
    if overage:
        cost_by["supabase_egress_overage"] = overage
    peak_conn = float(np.nan_to_num(peaks["peak_connections"].max(), nan=0.0))
    peak_msgs = float(np.nan_to_num(peaks["peak_messages_per_s"].max(), nan=0.0))
    errors = _meta_field(df, "error")
    failures = errors[errors.isin(RATE_LIMIT_ERRORS)]
    runs = downloads.drop_duplicates("session_id")
    proc, conf = _meta_field(runs, "processing_s"), _meta_field(runs, "confidence")
    gem = api[api["service"] == "gemini"]

    def _num(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)

    summary: dict[str, Any] = {
        "month": month, "as_of": as_of.isoformat(), "plan": limits.plan, "plan_table": limits.table,
        "days_in_month": ndays, "days_elapsed": elapsed, "units": "decimal: 1 GB = 1e9 bytes",
        "egress_bytes": egress, "egress_gb": round(egress / GB, 4),
        "egress_limit_bytes": limits.egress_limit_bytes, "egress_pct": _pct(egress, limits.egress_limit_bytes),
        "egress_by_kind": {k: int(v) for k, v in df[egress_mask].groupby("kind")["bytes"].sum().items()},
        "forecast_bytes": fc.forecast_bytes, "forecast_pct": _pct(fc.forecast_bytes, limits.egress_limit_bytes),
        "forecast_method": fc.method,
        "forecast_fit": {"slope_bytes_per_day": round(fc.slope_bytes_per_day, 3),
                         "intercept_bytes": round(fc.intercept_bytes, 3), "days_used": fc.days_used},
        "files_processed": files, "avg_file_bytes": round(avg_file),
        "avg_file_bytes_source": "egress_bytes / files_processed" if files else "plans file default (design: 30 min ~ 15 MB)",
        "files_remaining": files_remaining,
        "realtime": {
            "peak_connections": int(peak_conn), "connections_limit": limits.realtime_connections,
            "connections_pct": _pct(peak_conn, limits.realtime_connections),
            "peak_messages_per_s": round(peak_msgs, 3), "messages_per_s_limit": limits.realtime_messages_per_s,
            "messages_per_s_pct": _pct(peak_msgs, limits.realtime_messages_per_s),
            "connection_failures": int(len(failures)),
            "failures_by_code": {k: int(v) for k, v in failures.value_counts().items()},
        },
        "api_calls": api_by, "api_calls_total": int(sum(api_by.values())),
        "retries": retries_by, "retries_total": int(df["retries"].sum()) if len(df) else 0,
        "audio_minutes": round(float(downloads["audio_seconds"].sum()) / 60, 3),
        "tokens": tokens_by, "tokens_total": int(df["tokens"].sum()) if len(df) else 0,
        "cost_usd": round(sum(cost_by.values()), 6), "cost_by_service": cost_by,
        "egress_overage_usd": overage, "forecast_egress_overage_usd": overage_fc,
        "metrics": {
            "avg_processing_s": _num(proc.mean()) if proc.notna().any() else None,
            "realtime_connection_failures": int(len(failures)),
            "bandwidth_gb": round(egress / GB, 4),
            "api_call_counts": api_by,
            "mean_whisper_confidence": _num(conf.mean()) if conf.notna().any() else None,
            "gemini_success_rate": _num(_meta_field(gem, "ok").mean()) if len(gem) else None,
        },
    }
    summary["alerts"] = alerts_for([
        ("egress_bytes", "now", egress, limits.egress_limit_bytes),
        ("egress_bytes", "forecast", fc.forecast_bytes, limits.egress_limit_bytes),
        ("realtime_connections", "now", peak_conn, limits.realtime_connections),
        ("realtime_messages_per_s", "now", peak_msgs, limits.realtime_messages_per_s),
    ], warn_pct, limit_pct)
    return summary, daily


class GuardDecision(BaseModel):
    """What new runs do given this month's egress: normal, compact (forecast over the plan) or refuse."""

    mode: str  # "normal" | "compact" | "refuse"
    month: str
    egress_bytes: int
    forecast_bytes: int
    egress_limit_bytes: int
    egress_pct: float | None
    forecast_pct: float | None
    reason: str


def guard_decision(daily_egress: dict[str, int], limits: QuotaLimits, as_of: datetime, *, guard: bool = True,
                   enforce: bool = True, limit_pct: float = 100.0) -> GuardDecision:
    """daily_egress maps 'YYYY-MM-DD' of as_of's month to bytes (days without events may be absent)."""
    month = current_month(as_of)
    _, _, ndays = month_bounds(month)
    elapsed = days_elapsed(month, as_of)
    series = [daily_egress.get(f"{month}-{d:02d}", 0) for d in range(1, elapsed + 1)]
    egress = int(sum(series))
    fc = forecast_month(series, ndays)
    pct, fpct = _pct(egress, limits.egress_limit_bytes), _pct(fc.forecast_bytes, limits.egress_limit_bytes)
    common = dict(month=month, egress_bytes=egress, forecast_bytes=fc.forecast_bytes,
                  egress_limit_bytes=limits.egress_limit_bytes, egress_pct=pct, forecast_pct=fpct)
    if enforce and pct is not None and pct >= limit_pct:
        return GuardDecision(mode="refuse", reason=(
            f"egress this month is {pct:.1f} % of the {limits.plan} plan's {limits.egress_limit_bytes / GB:g} GB"),
            **common)
    if guard and fpct is not None and fpct >= limit_pct:
        return GuardDecision(mode="compact", reason=(
            f"egress is forecast to reach {fpct:.1f} % of the {limits.plan} plan by month end"), **common)
    return GuardDecision(mode="normal", reason="within plan", **common)


def compact_settings(settings: Settings) -> Settings:
    """What a run under the guard uses: the most compact transcode (Opus at the compact bitrate,
    one mono mix even for stereo) and the slower status interval."""
    q = settings.quota
    transcode = settings.transcode.model_copy(update={
        "bitrate_kbps": min(settings.transcode.bitrate_kbps, q.compact_bitrate_kbps),
        "stereo_min_difference": 2.0,  # a side/mid ratio never reaches 2: always one mix
    })
    status = settings.status.model_copy(update={
        "min_interval_s": max(settings.status.min_interval_s, q.compact_status_interval_s)})
    return settings.model_copy(update={"transcode": transcode, "status": status})
