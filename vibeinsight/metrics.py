"""The design's monitoring metrics over the usage_events ledger (pandas; no Prefect, no network):
what `vibeinsight metrics` prints, the quota report's `metrics` block and the daily report's artifact.

Over the events of a window (the frame of vibeinsight.quota.to_frame):
- the design's six: average processing time, Realtime connection failures, GB transferred, API calls,
  mean Whisper confidence, Gemini success rate (the share of runs whose Gemini analysis succeeded,
  a degraded analysis counting as a failure);
- processing seconds per audio minute (p50, p95), failed runs by error code, cost per audio hour,
  and each API service's error rate (calls that ended in an error, retried or not, over all calls).

A run is its `storage_download` row (one per session and run: audio seconds, processing time,
confidence and error code in its meta).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pandas as pd

from vibeinsight.quota import EGRESS_KINDS, GB, RATE_LIMIT_ERRORS


def _num(x: Any, digits: int = 4) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def window(events: pd.DataFrame, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    if not len(events):
        return events
    mask = pd.Series(True, index=events.index)
    if since is not None:
        mask &= events["at"] >= since
    if until is not None:
        mask &= events["at"] < until
    return events[mask]


def live_metrics(events: pd.DataFrame, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """The metrics block (JSON-ready) of the events in [since, until)."""
    df = window(events, since, until)
    runs = df[(df["kind"] == "storage_download") & df["session_id"].notna()]
    api = df[df["kind"] == "api_call"]
    egress = int(df.loc[df["kind"].isin(EGRESS_KINDS), "bytes"].sum()) if len(df) else 0
    errors = df["m_error"] if len(df) else pd.Series(dtype=object)
    rt_failures = errors[errors.isin(RATE_LIMIT_ERRORS)]

    proc, conf = runs["m_processing_s"], runs["m_confidence"]
    audio_min = runs["audio_seconds"] / 60.0
    per_min = (proc / audio_min.where(audio_min > 0)).dropna()
    codes = runs["m_error_code"].dropna()
    codes = codes[codes.astype(str) != ""]
    audio_s = float(runs["audio_seconds"].sum())
    cost = float(df["cost_usd"].sum()) if len(df) else 0.0

    calls = api.groupby("service", observed=True)["calls"].sum()
    failed = pd.to_numeric(api["m_failed_calls"], errors="coerce").fillna(0).groupby(api["service"], observed=True).sum()
    gem = api[api["service"] == "gemini"]
    return {
        # the design's six
        "avg_processing_s": _num(proc.mean()) if proc.notna().any() else None,
        "realtime_connection_failures": int(len(rt_failures)),
        "bandwidth_gb": round(egress / GB, 4),
        "api_call_counts": {k: int(v) for k, v in calls.items()},
        "mean_whisper_confidence": _num(conf.mean()) if conf.notna().any() else None,
        "gemini_success_rate": _num(gem["m_ok"].mean()) if len(gem) else None,
        # and what an operator asks next
        "runs": int(len(runs)),
        "failed_runs": int(len(codes)),
        "processing_s_per_audio_minute": {"p50": _num(per_min.quantile(0.5)) if len(per_min) else None,
                                          "p95": _num(per_min.quantile(0.95)) if len(per_min) else None},
        "failures_by_code": {str(k): int(v) for k, v in codes.value_counts().items()},
        "api_error_rates": {k: _num(failed.get(k, 0) / v) for k, v in calls.items() if v},
        "audio_minutes": round(audio_s / 60.0, 3),
        "cost_usd": round(cost, 6),
        "cost_per_audio_hour_usd": _num(cost / (audio_s / 3600.0), 6) if audio_s else None,
    }


def parse_since(text: str) -> float:
    """'24h', '7d', '90m', '3600s' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError as exc:
        raise ValueError(f"--since must look like 24h, 7d, 90m or seconds, got {text!r}") from exc
