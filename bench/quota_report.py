"""Quota report over a month of 1,000,000 usage events across every provider: time and peak memory.

    .venv/bin/python bench/quota_report.py [--events 1000000] [--postgres]

Loads a synthetic ledger, then runs the report in a fresh process, as the flow builds it (read
the month from the ledger, the pandas maths, chart, CSV and HTML), and prints its time and that
process's peak resident memory (VmHWM, imports included: Linux's ru_maxrss keeps the parent's
peak across exec, so it would report the loader's memory instead).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vibeinsight.cores import usable_cores  # noqa: E402


def peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_once(spec: str) -> dict:
    """In a fresh process: read the month, do the maths, render the files; time and peak RSS."""
    t_start = time.perf_counter()
    from blocks.plans import Plans
    from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger
    from tests.quota_helpers import at
    from vibeinsight import quota_render as render
    from vibeinsight.quota import month_bounds, month_report

    imports_s = time.perf_counter() - t_start
    kind, target = spec.split(":", 1)
    ledger = SQLiteUsageLedger(path=target) if kind == "sqlite" else PostgresUsageLedger(url=target)
    start, end, _ = month_bounds(MONTH)
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    frame = ledger.events(start, end)
    t_read = time.perf_counter()
    plans = Plans()
    summary, daily = month_report(frame, plans.limits("pro"), MONTH, at(MONTH, 30, 23), prices=plans.prices(),
                                  budget_usd=5000.0)
    t_maths = time.perf_counter()
    png = render.chart_png(summary, daily)
    render.html_page(summary, daily, png)
    render.csv_bytes(daily)
    render.markdown(summary)
    t_end = time.perf_counter()
    return {"events": len(frame), "imports_s": imports_s, "read_s": t_read - t0, "maths_s": t_maths - t_read,
            "files_s": t_end - t_maths, "total_s": t_end - t0,
            "rss_before_mb": rss_before, "rss_peak_mb": peak_rss_mb(),
            "egress_gb": summary["egress_gb"], "files_processed": summary["files_processed"],
            "providers": sorted(p for p, sec in summary["providers"].items() if sec["cost_usd"] or any(
                v for v in sec["usage"].values() if not isinstance(v, dict))),
            "binding": summary["binding"]["message"] if summary["binding"] else None}


MONTH = "2026-11"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--postgres", action="store_true", help="also run against a fresh PostgreSQL database")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(report_once(args.child)))
        return

    from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger
    from tests.quota_helpers import month_of_events

    rows = month_of_events(MONTH, args.events)

    def run(ledger, spec: str, label: str) -> None:
        t0 = time.perf_counter()
        ledger.record(rows)
        load_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"{label}: {r['events']:,} events in the month (loading the synthetic ledger: {load_s:.1f} s, not counted)")
        print(f"  report time   {r['total_s']:.2f} s  (read {r['read_s']:.2f} s, maths {r['maths_s']:.2f} s, "
              f"chart/HTML/CSV {r['files_s']:.2f} s; imports before it {r['imports_s']:.2f} s)  "
              f"(100,000 events before this issue: 2.4 s)")
        print(f"  peak memory   {r['rss_peak_mb']:.0f} MB peak RSS of the report's process "
              f"({r['rss_before_mb']:.0f} MB after imports)  (100,000 events before: 242 MB)")
        print(f"  Supabase egress {r['egress_gb']} GB, files {r['files_processed']:,}; providers {', '.join(r['providers'])}")
        print(f"  binding: {r['binding']}; load average {os.getloadavg()[0]:.1f} on {usable_cores()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "usage.db")
        run(SQLiteUsageLedger(path=path), f"sqlite:{path}", "SQLite")
    if args.postgres:
        from tests.pg import create_database, drop_database

        url = create_database()
        try:
            run(PostgresUsageLedger(url=url), f"postgres:{url}", "PostgreSQL")
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
