"""Issue 11's figures from one run of the load-and-fault scenario (tests/fault_stack.py): sessions
per minute without and with the faults (a worker SIGKILLed with its runs, the S3 server stopped
for 10 s, the status PostgreSQL restarted), the longest time a row stayed non-terminal after its
run ended, and the status-write delay p95 with a store that answers in 2 s (in process: the
flow's StageReporter through the background writer, so the run's own calls are timed too).

    python bench/load_faults.py [--sessions 30] [--skip-stack]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def slow_store_delays(answer_s: float = 2.0, run_s: float = 30.0, rate: float = 50.0) -> dict:
    """A run of run_s seconds reporting progress `rate` times a second against a store whose every
    write takes answer_s: delay from each state change to its row, and the longest report() call."""
    from types import SimpleNamespace

    from flows import status_hooks
    from vibeinsight.status_rule import next_seq, update_for_state

    class SlowStore:
        def __init__(self) -> None:
            self.writes = 0
            self.lock = threading.Lock()

        def apply(self, update, deployment=None):
            time.sleep(answer_s)  # the store under test answers this slowly
            with self.lock:
                self.writes += 1
            return True

    store = SlowStore()
    status_hooks.registry.status_store = lambda *a, **k: store  # this process only: the bench's stand-in
    status_hooks.get_settings = lambda: SimpleNamespace(status=SimpleNamespace(
        min_interval_s=1.0, final_wait_s=60.0, final_give_up_s=60.0))
    sid = str(uuid.uuid4())
    reporter = status_hooks.StageReporter(sid, "run", None)
    longest_call = 0.0
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < run_s:
        c = time.perf_counter()
        reporter.report("transcribe", (time.monotonic() - t0) / run_s)
        longest_call = max(longest_call, time.perf_counter() - c)
        i += 1
        time.sleep(1 / rate)  # the flow's pace of progress calls
    writer = status_hooks._writer(sid)
    c = time.perf_counter()
    status_hooks.publish(update_for_state("COMPLETED", session_id=sid, flow_run_id="run", user_id=None,
                                          seq=next_seq()))
    final_wait = time.perf_counter() - c
    delays = sorted(writer.delays)
    return {"calls": i, "writes": writer.writes, "p50": statistics.median(delays),
            "p95": delays[int(0.95 * (len(delays) - 1))], "longest_call_ms": longest_call * 1000,
            "final_wait_s": final_wait}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--skip-stack", action="store_true", help="only the in-process slow-store figure")
    args = ap.parse_args()
    if not args.skip_stack:
        from tests.fault_stack import run_scenario

        results = {}
        for faults in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                out = results[faults] = run_scenario(Path(tmp), n=args.sessions, faults=faults, deadline_s=1500,
                                                     log=lambda s: print(s, flush=True))
            first = sum(r["status"] == "COMPLETED" for r in out.first_rows.values())
            print(f"{'with faults   ' if faults else 'without faults'}: {len(out.sessions)} sessions in "
                  f"{out.wall_s:.0f} s = {out.per_min:.1f} sessions/min; {first} completed first time, "
                  f"{len(out.reruns)} re-run ({sorted(out.reruns.values())}); longest non-terminal row after its run "
                  f"ended: {out.max_row_lag_s:.1f} s; uploads unchanged: {out.uploads_after == out.uploads}", flush=True)
        print(f"throughput with faults / without: {results[True].per_min / results[False].per_min:.2f}")
    d = slow_store_delays()
    print(f"status writes, store answering in 2 s, 30 s run at 50 calls/s: {d['calls']} calls -> {d['writes']} writes; "
          f"delay median {d['p50']:.2f} s, p95 {d['p95']:.2f} s; longest report() call {d['longest_call_ms']:.2f} ms; "
          f"terminal write landed {d['final_wait_s']:.2f} s after the hook")


if __name__ == "__main__":
    main()
