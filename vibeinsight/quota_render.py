"""The quota report as files operators read: markdown, CSV, a PNG chart and an HTML page."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd

from vibeinsight.quota import GB


def _gb(x: Any) -> str:
    return "-" if x is None or pd.isna(x) else f"{x / GB:.3f} GB"


def _pct(x: Any) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.1f} %"


def markdown(summary: dict) -> str:
    s, rt = summary, summary["realtime"]
    lines = [
        f"# Quota report {s['month']} — plan {s['plan']} ({s['plan_table']})",
        "",
        f"As of {s['as_of']}, day {s['days_elapsed']} of {s['days_in_month']}.",
        "",
        "| metric | value | limit | % |",
        "| --- | ---: | ---: | ---: |",
        f"| egress month to date | {_gb(s['egress_bytes'])} | {_gb(s['egress_limit_bytes'])} | {_pct(s['egress_pct'])} |",
        f"| egress forecast, month end | {_gb(s['forecast_bytes'])} | {_gb(s['egress_limit_bytes'])} | {_pct(s['forecast_pct'])} |",
        f"| Realtime peak connections | {rt['peak_connections']} | {rt['connections_limit']} | {_pct(rt['connections_pct'])} |",
        f"| Realtime peak messages/s | {rt['peak_messages_per_s']} | {rt['messages_per_s_limit']} | {_pct(rt['messages_per_s_pct'])} |",
        "",
        f"Files processed: **{s['files_processed']}**, {s['avg_file_bytes'] / 1e6:.2f} MB of egress each "
        f"({s['avg_file_bytes_source']}); **{s['files_remaining']}** more fit in the plan at that average.",
        "",
        f"API calls: {s['api_calls_total']} {s['api_calls']}; retries {s['retries_total']}; audio "
        f"{s['audio_minutes']} min; tokens {s['tokens_total']}; cost **${s['cost_usd']:.4f}** {s['cost_by_service']}.",
        "",
        f"Forecast: {s['forecast_method']}.",
        "",
        "## Monitoring",
        "",
        *(f"- {k}: {v}" for k, v in s["metrics"].items()),
        "",
        "## Alerts",
        "",
        *([f"- **{a['level'].upper()}** ({a['basis']}): {a['message']}" for a in s["alerts"]] or ["- none"]),
    ]
    guard = s.get("guard")
    if guard:
        lines += ["", "## Guard rails", "", f"New runs: **{guard['mode']}** — {guard['reason']}.",
                  *(["Compact transcode and slower status updates are in force for new runs."]
                    if guard["mode"] == "compact" else []),
                  *(["New sessions are refused with `quota_exceeded`."] if guard["mode"] == "refuse" else [])]
    return "\n".join(lines) + "\n"


def csv_bytes(daily: pd.DataFrame) -> bytes:
    return daily.to_csv(index=False).encode()


def chart_png(summary: dict, daily: pd.DataFrame) -> bytes:
    """Cumulative egress by day against the plan line and the forecast."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), dpi=100)
    ax = fig.subplots()
    days = pd.to_datetime(daily["date"]).dt.day
    ax.bar(days, daily["egress_bytes"] / GB, color="#9ecae1", label="daily egress")
    ax.plot(days, daily["egress_cum_bytes"] / GB, color="#08519c", marker="o", ms=3, label="month to date")
    ax.plot(days, daily["forecast_cum_bytes"] / GB, color="#fd8d3c", ls="--", label="forecast")
    ax.axhline(summary["egress_limit_bytes"] / GB, color="#cb181d", label=f"{summary['plan']} plan limit")
    ax.set_xlabel(f"day of {summary['month']}")
    ax.set_ylabel("GB (1e9 bytes)")
    ax.set_title(f"Egress {summary['month']}: {_pct(summary['egress_pct'])} now, "
                 f"{_pct(summary['forecast_pct'])} forecast")
    ax.legend(loc="center left", fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def html_page(summary: dict, daily: pd.DataFrame, png: bytes) -> bytes:
    img = base64.b64encode(png).decode()
    alerts = "".join(f"<li><b>{html.escape(a['level'])}</b> ({html.escape(a['basis'])}): "
                     f"{html.escape(a['message'])}</li>" for a in summary["alerts"]) or "<li>none</li>"
    table = daily.to_html(index=False, na_rep="", float_format=lambda x: f"{x:,.2f}", border=0)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quota report {html.escape(summary['month'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}}</style></head><body>
<h1>Quota report {html.escape(summary['month'])}: plan {html.escape(summary['plan'])}</h1>
<p>Egress {_gb(summary['egress_bytes'])} of {_gb(summary['egress_limit_bytes'])} ({_pct(summary['egress_pct'])});
forecast {_gb(summary['forecast_bytes'])} ({_pct(summary['forecast_pct'])}). Files remaining: {summary['files_remaining']}.
Cost ${summary['cost_usd']:.4f}.</p>
<img id="egress-chart" alt="daily egress against the plan" src="data:image/png;base64,{img}">
<h2>Alerts</h2><ul>{alerts}</ul>
<h2>Daily</h2>{table}
<p><small>{html.escape(summary['forecast_method'])}</small></p>
</body></html>
"""
    return page.encode()
