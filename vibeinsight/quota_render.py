"""The quota report as files operators read: markdown, CSV, a PNG chart and an HTML page."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd

from vibeinsight.quota import GB

# The chart's panels: a limited resource, the daily columns that draw it, and its unit's scale.
PANELS = (
    ("supabase", "egress_bytes", "Supabase egress (GB)", "egress_bytes", "egress_cum_bytes", "forecast_cum_bytes", GB),
    ("supabase", "realtime_messages", "Realtime messages (millions)", "realtime_messages", "realtime_messages_cum",
     "realtime_messages_forecast_cum", 1e6),
    ("supabase", "realtime_connections", "Realtime peak connections", "realtime_peak_connections", None, None, 1),
    ("supabase", "realtime_messages_per_s", "Realtime peak messages/s", "realtime_peak_messages_per_s", None, None, 1),
    ("budget", "cost_usd", "Cost (USD) against the budget", "cost_usd", "cost_cum_usd", "cost_forecast_cum_usd", 1),
)


def _gb(x: Any) -> str:
    return "-" if x is None or pd.isna(x) else f"{x / GB:.3f} GB"


def _pct(x: Any) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.1f} %"


def _num(x: Any, unit: str) -> str:
    if x is None or pd.isna(x):
        return "-"
    if unit == "bytes":
        return _gb(x)
    if unit == "USD":
        return f"${x:,.4f}"
    return f"{x:,.6g} {unit}"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:,.4f}"


def markdown(summary: dict) -> str:
    s, rt = summary, summary["realtime"]
    binding = s.get("binding")
    per = s["per_session"]
    lines = [
        f"# Quota report {s['month']} — plan {s['plan']} ({s['plan_table']})",
        "",
        f"As of {s['as_of']}, day {s['days_elapsed']} of {s['days_in_month']}. Cost so far **{_usd(s['cost_usd'])}**, "
        f"forecast {_usd(s['forecast_cost_usd'])}" + (f" (budget {_usd(s['budget_usd'])})" if s.get("budget_usd") else "") + ".",
        "",
        f"**Binding constraint:** {binding['message']}." if binding else "**Binding constraint:** none (no limited resource).",
        "",
        f"Per session ({per['sessions']} sessions, {per['audio_hours']:.2f} audio hours): "
        f"{_usd(per['cost_usd_total'])} a session, {_usd(per['cost_per_audio_hour_usd_total'])} an audio hour; "
        f"Supabase egress {per['supabase_egress_bytes'] or 0:,.0f} B and {per['realtime_messages'] or 0:g} Realtime "
        f"messages a session.",
        "",
    ]
    for provider, sec in s["providers"].items():
        if not (sec["cost_usd"] or sec["limits"] or any(v for v in sec["usage"].values() if not isinstance(v, dict))):
            continue
        lines += [f"## {provider}", "",
                  f"Cost {_usd(sec['cost_usd'])} to date, forecast {_usd(sec['forecast_cost_usd'])}; "
                  f"{_usd(per['cost_usd'].get(provider))} a session, "
                  f"{_usd(per['cost_per_audio_hour_usd'].get(provider))} an audio hour.", "",
                  "Usage: " + ", ".join(f"{k} {v}" for k, v in sec["usage"].items()), ""]
        if sec["limits"]:
            lines += ["| resource | used | limit | % | forecast | forecast % | reached on |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
            lines += [f"| {x['resource']} ({x['kind']}{', hard' if x['hard'] else ''}) | {_num(x['used'], x['unit'])} | "
                      f"{_num(x['limit'], x['unit'])} | {_pct(x['pct'])} | {_num(x['forecast'], x['unit'])} | "
                      f"{_pct(x['forecast_pct'])} | {x['hits_on'] or '-'} |" for x in sec["limits"]]
            lines.append("")
    budget = [x for x in s["limits"] if x["provider"] == "budget"]
    if budget:
        b = budget[0]
        lines += ["## budget", "", f"{_usd(b['used'])} of {_usd(b['limit'])} ({_pct(b['pct'])}), forecast "
                  f"{_usd(b['forecast'])} ({_pct(b['forecast_pct'])}).", ""]
    lines += [
        f"Supabase egress forecast: {s['forecast_method']}. Files processed: **{s['files_processed']}**, "
        f"{s['avg_file_bytes'] / 1e6:.3f} MB of Supabase egress each ({s['avg_file_bytes_source']}); "
        f"**{s['files_remaining']}** more fit in the plan's egress at that average.",
        "",
        f"Realtime: peak {rt['peak_connections']} connections of {rt['connections_limit']}, "
        f"{rt['peak_messages_per_s']} messages/s of {rt['messages_per_s_limit']}; connection failures "
        f"{rt['connection_failures']} {rt['failures_by_code']}.",
        "",
        "## Monitoring",
        "",
        *(f"- {k}: {v}" for k, v in s["metrics"].items()),
        "",
        "## Alerts",
        "",
        *([f"- **{a['level'].upper()}** ({a['basis']}): {a['message']}" for a in s["alerts"]] or ["- none"]),
    ]
    if any(a["metric"] == "realtime_connections" for a in s["alerts"]):
        lines += ["", "Realtime connections are near the plan's limit: the guard cannot lower them (each watching "
                  "client holds one); move to a larger plan or close idle subscriptions."]
    guard = s.get("guard")
    if guard:
        lines += ["", "## Guard rails", "", f"New runs: **{guard['mode']}** — {guard['reason']}.",
                  *(["Compact transcode, compact result documents and slower status updates are in force for new runs."]
                    if guard["mode"] == "compact" else []),
                  *(["New sessions are refused with `quota_exceeded`."] if guard["mode"] == "refuse" else [])]
    return "\n".join(lines) + "\n"


def csv_bytes(daily: pd.DataFrame) -> bytes:
    return daily.to_csv(index=False).encode()


def chart_png(summary: dict, daily: pd.DataFrame) -> bytes:
    """One panel per limited resource, each against its own limit: monthly totals as daily bars, the
    month to date and the forecast; peaks as daily peaks."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    limits = {(x["provider"], x["resource"]): x for x in summary["limits"]}
    panels = [p for p in PANELS if (p[0], p[1]) in limits]
    fig = Figure(figsize=(8, 2.6 * len(panels)), dpi=100)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    days = pd.to_datetime(daily["date"]).dt.day
    for ax, (provider, resource, title, col, cum, forecast, scale) in zip(axes, panels, strict=True):
        lim = limits[provider, resource]
        if cum:
            ax.bar(days, daily[col] / scale, color="#9ecae1", label="daily")
            ax.plot(days, daily[cum] / scale, color="#08519c", marker="o", ms=3, label="month to date")
            ax.plot(days, daily[forecast] / scale, color="#fd8d3c", ls="--", label="forecast")
        else:
            ax.plot(days, daily[col] / scale, color="#08519c", marker="o", ms=3, label="daily peak")
        ax.axhline(lim["limit"] / scale, color="#cb181d", label=f"{summary['plan'] if provider == 'supabase' else provider} limit")
        share = lim["forecast_pct"] if lim["forecast_pct"] is not None else lim["pct"]
        ax.set_title(f"{title}: {_pct(lim['pct'])} now" + (f", {_pct(share)} forecast" if lim["forecast_pct"] is not None else ""),
                     fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(f"day of {summary['month']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def html_page(summary: dict, daily: pd.DataFrame, png: bytes) -> bytes:
    img = base64.b64encode(png).decode()
    alerts = "".join(f"<li><b>{html.escape(a['level'])}</b> ({html.escape(a['basis'])}): "
                     f"{html.escape(a['message'])}</li>" for a in summary["alerts"]) or "<li>none</li>"
    table = daily.to_html(index=False, na_rep="", float_format=lambda x: f"{x:,.2f}", border=0)
    limits = pd.DataFrame(summary["limits"]).to_html(index=False, na_rep="", border=0) if summary["limits"] else ""
    costs = pd.DataFrame([{"provider": p, "cost_usd": s["cost_usd"], "forecast_cost_usd": s["forecast_cost_usd"],
                           "per_session_usd": summary["per_session"]["cost_usd"].get(p),
                           "per_audio_hour_usd": summary["per_session"]["cost_per_audio_hour_usd"].get(p)}
                          for p, s in summary["providers"].items()]).to_html(index=False, na_rep="", border=0)
    binding = summary.get("binding")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quota report {html.escape(summary['month'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}}</style></head><body>
<h1>Quota report {html.escape(summary['month'])}: plan {html.escape(summary['plan'])}</h1>
<p>Binding constraint: {html.escape(binding['message']) if binding else 'none'}.</p>
<p>Supabase egress {_gb(summary['egress_bytes'])} of {_gb(summary['egress_limit_bytes'])} ({_pct(summary['egress_pct'])});
forecast {_gb(summary['forecast_bytes'])} ({_pct(summary['forecast_pct'])}). Files remaining: {summary['files_remaining']}.
Cost {_usd(summary['cost_usd'])}, forecast {_usd(summary['forecast_cost_usd'])}.</p>
<img id="egress-chart" alt="each limited resource against its own limit" src="data:image/png;base64,{img}">
<h2>Cost by provider</h2>{costs}
<h2>Limits</h2>{limits}
<h2>Alerts</h2><ul>{alerts}</ul>
<h2>Daily</h2>{table}
<p><small>{html.escape(summary['forecast_method'])}</small></p>
</body></html>
"""
    return page.encode()


def metrics_markdown(m: dict, title: str) -> str:
    """The monitoring metrics (vibeinsight.metrics.live_metrics) as a markdown table."""
    def v(x: Any) -> str:
        if x is None:
            return "-"
        if isinstance(x, dict):
            return ", ".join(f"{k} {v(y)}" for k, y in x.items()) or "none"
        return f"{x:g}" if isinstance(x, float) else str(x)

    rows = [
        ("average processing time (s)", m["avg_processing_s"]),
        ("processing s per audio minute (p50 / p95)",
         f"{v(m['processing_s_per_audio_minute']['p50'])} / {v(m['processing_s_per_audio_minute']['p95'])}"),
        ("Realtime connection failures", m["realtime_connection_failures"]),
        ("GB transferred", m["bandwidth_gb"]),
        ("API calls", m["api_call_counts"]),
        ("API error rates (failed calls / calls)", m["api_error_rates"]),
        ("mean Whisper confidence", m["mean_whisper_confidence"]),
        ("Gemini success rate", m["gemini_success_rate"]),
        ("runs / failed", f"{m['runs']} / {m['failed_runs']}"),
        ("failures by code", m["failures_by_code"]),
        ("audio minutes", m["audio_minutes"]),
        ("cost (USD) / per audio hour", f"{v(m['cost_usd'])} / {v(m['cost_per_audio_hour_usd'])}"),
    ]
    return "\n".join([f"# {title}", "", "| metric | value |", "| --- | ---: |",
                      *(f"| {name} | {v(value)} |" for name, value in rows)]) + "\n"
