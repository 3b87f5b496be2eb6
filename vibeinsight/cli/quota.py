"""`vibeinsight quota report`: usage against the plan."""

from __future__ import annotations

import json
from typing import Optional

import typer

from vibeinsight.cli.common import fail

app = typer.Typer(no_args_is_help=True, help="Bandwidth, Realtime and cost against the plan")


@app.command("report")
def report(
    plan: Optional[str] = typer.Option(None, "--plan", help="free, pro or team (default VIBEINSIGHT_QUOTA_PLAN)"),
    month: Optional[str] = typer.Option(None, "--month", help="YYYY-MM (default: this month, UTC)"),
    table: Optional[str] = typer.Option(None, "--table", help="supabase-current (default) or design"),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON summary on stdout"),
) -> None:
    """Report this month's usage against the plan and store it under reports/YYYY-MM/ in the bucket.

    Runs without Prefect (no artifacts or events: the quota-report flow adds those)."""
    from flows.quota_report import build_report, store_report
    from vibeinsight.quota import current_month
    from vibeinsight.quota_render import markdown
    from vibeinsight.settings import get_settings

    settings = get_settings()
    plan = plan or settings.quota.plan
    if plan not in ("free", "pro", "team"):
        fail("invalid_argument", f"--plan must be free, pro or team, got {plan!r}")
    try:
        summary, daily = build_report(settings, plan, month or current_month(), table)
    except FileNotFoundError as exc:
        fail("invalid_setting", f"VIBEINSIGHT_QUOTA_PLANS_FILE: no such file: {exc.filename or exc}")
    except ValueError as exc:
        fail("invalid_argument", str(exc))
    store_report(settings, summary, daily)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(markdown(summary)))

