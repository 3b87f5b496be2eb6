"""Guard rails for new process-audio runs, from this month's egress in the usage ledger.

forecast over the plan -> the most compact transcode (Opus at the compact bitrate, one mono
mix even for stereo) and slower status updates; egress at the limit -> refuse the session
with InputRejected(quota_exceeded). Both configurable (VIBEINSIGHT_QUOTA_GUARD / _ENFORCE).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from blocks import registry
from flows import status
from vibeinsight.errors import InputRejected
from vibeinsight.quota import GuardDecision, guard_decision, month_bounds, current_month
from vibeinsight.settings import Settings

log = logging.getLogger("vibeinsight.quota")


def decide(settings: Settings, now: datetime | None = None) -> GuardDecision:
    now = now or datetime.now(timezone.utc)
    q = settings.quota
    limits = registry.plans(settings).limits(q.plan)
    start, end, _ = month_bounds(current_month(now))
    daily = registry.usage_ledger(settings).daily_egress(start, end)
    return guard_decision(daily, limits, now, guard=q.guard, enforce=q.enforce, limit_pct=q.limit_pct)


def compact(settings: Settings) -> Settings:
    """A copy of settings with the most compact transcode and the slower status interval."""
    q = settings.quota
    transcode = settings.transcode.model_copy(update={
        "bitrate_kbps": min(settings.transcode.bitrate_kbps, q.compact_bitrate_kbps),
        "stereo_min_difference": 2.0,  # a side/mid ratio never reaches 2: always one mix
    })
    return settings.model_copy(update={
        "transcode": transcode,
        "status_min_interval_s": max(settings.status_min_interval_s, q.compact_status_interval_s),
    })


def guard_run(settings: Settings, session_id: str) -> Settings:
    """Called at the start of process-audio: the settings the run should use, or InputRejected."""
    if not (settings.quota.guard or settings.quota.enforce):
        return settings
    try:
        decision = decide(settings)
    except Exception as exc:  # an unreadable ledger must not stop the pipeline
        log.warning("quota guard skipped: %s", exc)
        return settings
    if decision.mode == "refuse":
        raise InputRejected(f"{decision.reason}; new sessions are refused until the plan allows more "
                            "(VIBEINSIGHT_QUOTA_ENFORCE=false to run anyway)", "quota_exceeded")
    if decision.mode != "compact":
        return settings
    log.warning("quota guard: %s; compact transcode and slower status updates", decision.reason)
    guarded = compact(settings)
    status.slow_down(session_id, guarded.status_min_interval_s)  # the hooks' writer exists already
    return guarded
