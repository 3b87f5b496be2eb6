"""`vibeinsight metrics`: the design's monitoring metrics, live from the usage ledger."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import typer

from vibeinsight.cli.common import fail

app = typer.Typer()


@app.command("metrics")
def metrics(
    since: str = typer.Option("24h", "--since", help="window up to now: 24h, 7d, 90m or seconds"),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON document on stdout"),
) -> None:
    """Average processing time (p50/p95 per audio minute), Realtime failures, GB transferred, API calls
    and error rates, Whisper confidence, Gemini success rate, failures by code, cost per audio hour."""
    from blocks import registry
    from vibeinsight.metrics import live_metrics, parse_since
    from vibeinsight.quota_render import metrics_markdown

    try:
        seconds = parse_since(since)
    except ValueError as exc:
        fail("invalid_argument", str(exc))
    if seconds <= 0:
        fail("invalid_argument", f"--since must be positive, got {since!r}")
    until = datetime.now(timezone.utc)
    start = until - timedelta(seconds=seconds)
    events = registry.usage_ledger().events(start, until + timedelta(seconds=1))
    doc = {"since": start.isoformat(), "until": until.isoformat(), **live_metrics(events, start, until)}
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(metrics_markdown(doc, f"Metrics since {doc['since']} ({since})")))
