"""quota-report: this month's egress, Realtime, API use and cost against the plan.

Outputs: Prefect artifacts on the flow run (markdown summary, daily and cost tables, the chart),
and reports/YYYY-MM/ in the bucket (quota-report.json, daily.csv, egress.png, report.html,
summary.md). An alert fails nothing: it emits a Prefect event `vibeinsight.quota.alert` (an
Automation can notify) and upserts a quota_alerts row.
"""

from __future__ import annotations

from datetime import datetime, timezone
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
from vibeinsight.quota import current_month, guard_decision, month_bounds, month_report
from vibeinsight.settings import Settings, get_settings

ALERT_EVENT = "vibeinsight.quota.alert"


def build_report(settings: Settings, plan: str, month: str, table: str | None = None,
                 as_of: datetime | None = None) -> tuple[dict[str, Any], Any]:
    """Summary and daily table for one month (also what `vibeinsight quota report` prints)."""
    as_of = as_of or datetime.now(timezone.utc)
    limits = registry.plans(settings, table).limits(plan)
    start, end, _ = month_bounds(month)
    ledger = registry.usage_ledger(settings)
    summary, daily = month_report(ledger.events(start, end), limits, month, as_of,
                                  settings.quota.warn_pct, settings.quota.limit_pct)
    summary["plan_sources"] = {k: f.model_dump() for k, f in limits.sources.items()}
    if month == current_month(as_of):  # the guard rails act on the current month only
        q = settings.quota
        summary["guard"] = guard_decision(ledger.daily_egress(start, end), limits, as_of, guard=q.guard,
                                          enforce=q.enforce, limit_pct=q.limit_pct).model_dump()
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
    cost = [{"service": k, "cost_usd": v, "api_calls": summary["api_calls"].get(k, 0),
             "retries": summary["retries"].get(k, 0), "tokens": summary["tokens"].get(k, 0)}
            for k, v in sorted(summary["cost_by_service"].items())]
    create_table_artifact(cost, key="quota-cost", description="Cost and calls by service")
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
