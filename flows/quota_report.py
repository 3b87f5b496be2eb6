"""quota-report: this month's usage, limits, forecast and cost per provider (Supabase, Tigris,
Fly, OpenAI, Gemini), the binding constraint, and cost per session and per audio hour.

Outputs: Prefect artifacts on the flow run (markdown summary, daily, cost and limits tables, the
chart), and reports/YYYY-MM/ in the bucket (quota-report.json, daily.csv, egress.png (every
limited resource against its own limit), report.html, summary.md). An alert fails nothing: it
emits a Prefect event `vibeinsight.quota.alert` (an Automation can notify) and upserts a
quota_alerts row.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.events import emit_event

from blocks import registry
from vibeinsight import quota_render as render
from vibeinsight.metrics import live_metrics
from vibeinsight.quota import current_month, guard_decision, month_bounds, month_report
from vibeinsight.settings import Settings, get_settings

ALERT_EVENT = "vibeinsight.quota.alert"


def build_report(settings: Settings, plan: str, month: str, table: str | None = None,
                 as_of: datetime | None = None) -> tuple[dict[str, Any], Any]:
    """Summary and daily table for one month (also what `vibeinsight quota report` prints)."""
    as_of = as_of or datetime.now(timezone.utc)
    plans = registry.plans(settings, table)
    limits = plans.limits(plan)
    start, end, _ = month_bounds(month)
    ledger = registry.usage_ledger(settings)
    q = settings.quota
    summary, daily = month_report(ledger.events(start, end), limits, month, as_of, q.warn_pct, q.limit_pct,
                                  prices=plans.prices(), budget_usd=q.budget_usd)
    summary["plan_sources"] = {k: f.model_dump() for k, f in limits.sources.items()}
    # What `vibeinsight metrics` shows for the last day (the month's block is summary["metrics"]).
    day = as_of - timedelta(hours=24)
    summary["metrics_24h"] = live_metrics(ledger.events(day, as_of + timedelta(seconds=1)), day, as_of)
    if month == current_month(as_of):  # the guard rails act on the current month only
        summary["guard"] = guard_decision(ledger.daily_totals(start, end), limits, as_of, guard=q.guard,
                                          enforce=q.enforce, limit_pct=q.limit_pct, warn_pct=q.warn_pct,
                                          budget_usd=q.budget_usd).model_dump()
    return summary, daily


def store_report(settings: Settings, summary: dict, daily) -> dict[str, str]:
    """Write the report's files under reports/YYYY-MM/ in the bucket; returns {name: key}."""
    storage = registry.storage(settings)
    png = render.chart_png(summary, daily)
    prefix = f"reports/{summary['month']}/"
    files = {
        "quota-report.json": (None, "application/json"),
        "daily.csv": (render.csv_bytes(daily), "text/csv"),
        "egress.png": (png, "image/png"),
        "report.html": (render.html_page(summary, daily, png), "text/html; charset=utf-8"),
        "summary.md": (render.markdown(summary).encode(), "text/markdown; charset=utf-8"),
    }
    keys = {name: prefix + name for name in files}
    summary["report_keys"] = keys
    for name, (data, content_type) in files.items():
        if data is None:
            storage.put_json(keys[name], summary)
        else:
            storage.put_bytes(keys[name], data, content_type)
    return keys


def _url(storage, key: str) -> str | None:
    """A link to a stored report file: presigned GET on S3, file:// on the local bucket."""
    client = getattr(storage, "client", None)
    if callable(client):
        try:
            return client().generate_presigned_url(
                "get_object", Params={"Bucket": storage.bucket, "Key": key}, ExpiresIn=7 * 24 * 3600)
        except Exception:  # noqa: BLE001
            return None
    root = getattr(storage, "root", None)
    return (Path(root) / key).resolve().as_uri() if root else None


@task(name="quota-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(summary: dict, daily, keys: dict[str, str], settings: Settings) -> None:
    create_markdown_artifact(render.markdown(summary), key="quota-summary",
                             description=f"Quota {summary['month']} ({summary['plan']})")
    rows = daily.astype(object).where(daily.notna(), None)
    rows["date"] = rows["date"].astype(str)
    create_table_artifact(rows.to_dict("records"), key="quota-daily", description="Daily egress, files, API use, cost")
    cost = [{"provider": p, "cost_usd": s["cost_usd"], "forecast_cost_usd": s["forecast_cost_usd"],
             "per_session_usd": summary["per_session"]["cost_usd"].get(p, 0.0),
             "per_audio_hour_usd": summary["per_session"]["cost_per_audio_hour_usd"].get(p, 0.0)}
            for p, s in summary["providers"].items()]
    create_table_artifact(cost, key="quota-cost", description="Cost by provider: month to date, forecast, per session")
    create_table_artifact([{k: v for k, v in x.items()} for x in summary["limits"]], key="quota-limits",
                          description="Each limited resource against its own limit")
    create_markdown_artifact(render.metrics_markdown(summary["metrics_24h"], "Monitoring metrics, last 24 hours"),
                             key="monitoring-metrics", description="The design's monitoring metrics over the last 24 h")
    storage = registry.storage(settings)
    chart, page = _url(storage, keys["egress.png"]), _url(storage, keys["report.html"])
    if chart:
        create_image_artifact(chart, key="quota-egress-chart", description="Daily egress vs plan and forecast")
    if page:
        create_link_artifact(page, link_text=f"quota report {summary['month']}", key="quota-report-html")


@task(name="quota-alerts", cache_policy=NO_CACHE)
def raise_alerts(summary: dict, settings: Settings) -> int:
    """Emit one Prefect event per alert and upsert the quota_alerts rows; never fails the run."""
    flow_run_id = str(get_run_context().task_run.flow_run_id)
    for a in summary["alerts"]:
        emit_event(
            event=ALERT_EVENT,
            resource={"prefect.resource.id": f"vibeinsight.quota.{a['metric']}",
                      "prefect.resource.name": a["metric"], "vibeinsight.level": a["level"],
                      "vibeinsight.basis": a["basis"], "vibeinsight.plan": summary["plan"],
                      "vibeinsight.month": summary["month"]},
            related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}],
            payload={**a, "month": summary["month"], "plan": summary["plan"]},
        )
    return registry.usage_ledger(settings).record_alerts(summary["alerts"], summary["month"], summary["plan"],
                                                         flow_run_id)


@flow(name="quota-report", log_prints=False)
def quota_report(plan: str | None = None, month: str | None = None, table: str | None = None) -> dict:
    """Build, store and publish this month's (or `month`'s) quota report; returns its summary."""
    settings = get_settings()
    plan = plan or settings.quota.plan
    month = month or current_month()
    summary, daily = build_report(settings, plan, month, table)
    keys = store_report(settings, summary, daily)
    publish_artifacts(summary, daily, keys, settings)
    raise_alerts(summary, settings)
    return summary
