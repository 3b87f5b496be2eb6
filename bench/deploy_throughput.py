"""Deployment path figures: REST trigger latency, queue pick-up, and sessions per minute with one
worker vs two on the same pool (real Prefect server on SQLite, tiny.en, hotwords.mp3 at 4 s).
Usage: .venv/bin/python bench/deploy_throughput.py [sessions]"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.trigger import trigger  # noqa: E402
from tests.prefect_server import FAST_WORKERS, start_local_prefect  # noqa: E402

AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data" / "hotwords.mp3"


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def batch(lp, n: int) -> dict:
    t0 = time.monotonic()
    calls, runs = [], []
    for _ in range(n):
        c = time.monotonic()
        runs.append(trigger(str(AUDIO), language="en", api_url=lp.api_url, write_pending=False))
        calls.append(time.monotonic() - c)
    done = [lp.wait_run(r.flow_run_id, 900) for r in runs]
    wall = time.monotonic() - t0
    pickup = [ts(d["start_time"]) - ts(d["created"]) for d in done if d["start_time"]]
    return {"wall_s": wall, "per_min": n / wall * 60, "trigger_ms": statistics.median(calls) * 1000,
            "pickup_s": statistics.median(pickup), "run_s": statistics.median(d["total_run_time"] for d in done),
            "ok": sum(d["state"]["type"] == "COMPLETED" for d in done)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        lp = start_local_prefect(Path(tmp), workers=1, env=FAST_WORKERS)
        print(f"server + deploy --all + 1 worker ready: {time.monotonic() - t0:.1f} s")
        os.environ["VIBEINSIGHT_HOME"] = str(lp.home)
        try:
            one = batch(lp, n)
            lp.add_worker("worker-2", limit=1)
            two = batch(lp, n)
        finally:
            lp.close()
    for label, r in (("1 worker ", one), ("2 workers", two)):
        print(f"{label}: {r['ok']}/{n} completed, {r['wall_s']:.1f} s wall, {r['per_min']:.1f} sessions/min, "
              f"trigger call {r['trigger_ms']:.0f} ms, created->running {r['pickup_s']:.1f} s, run {r['run_s']:.1f} s")
    print(f"speed-up with a second worker: {one['wall_s'] / two['wall_s']:.2f}x (2 cores for both)")


if __name__ == "__main__":
    main()
