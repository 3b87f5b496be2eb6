"""Status writes for one session on the local PostgreSQL: rate, bytes per write, state-to-row delay.

Replays the stage-update stream of a processing run (the StageReporter and hooks of
flows/status_hooks.py, through the per-session CoalescingWriter) into a fresh Supabase-shaped database
with the migrations applied, and prints figures. The run is compressed in time: --run-s seconds of
processing with --rate progress calls a second (a 10-minute recording takes about that long here).
Delay = time the row holds a state − time of that state change (its seq is the change's timestamp).

    .venv/bin/python bench/status_writes.py [--run-s 60] [--rate 50] [--sessions 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-s", type=float, default=60.0, help="simulated processing time of the recording")
    ap.add_argument("--rate", type=float, default=50.0, help="progress calls per second from the flow")
    ap.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    args = ap.parse_args()

    import psycopg

    from tests.pg import create_database, drop_database

    url = create_database()
    os.environ.update(VIBEINSIGHT_STATUS_URL=url, VIBEINSIGHT_STATUS_PG_ROLE="service_role",
                      VIBEINSIGHT_STATUS_MIN_INTERVAL_S="1.0")
    from prefect.states import Completed, Running

    from blocks import status_store as ss
    from flows import status_hooks as status
    from vibeinsight.schemas import Status
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    writes: list[dict] = []
    lock = threading.Lock()
    original = ss.PostgresStatusStore.apply

    def timed_apply(self, update, deployment=None):
        payload = json.dumps(ss.rpc_params(update, deployment)).encode()
        changed = original(self, update, deployment)
        done = time.time()
        with lock:
            writes.append(dict(session=update.session_id, at=done, delay=done - update.seq / 1e6,
                               bytes=len(payload), changed=changed, status=update.status.value))
        return changed

    ss.PostgresStatusStore.apply = timed_apply

    class _Run:  # what the hooks read from a flow run
        def __init__(self, sid):
            self.id, self.parameters = uuid.uuid4(), {"session_id": sid, "user_id": None}

    def one_session(sid: str) -> None:
        run = _Run(sid)
        status.mirror_state(None, run, Running())
        reporter = status.StageReporter(sid, str(run.id), None)
        steps = int(args.run_s * args.rate)
        stages = list(status.StageReporter.SPANS)
        for i in range(steps):
            frac = i / steps
            stage = stages[min(len(stages) - 1, int(frac * len(stages)))]
            reporter.report(stage, (frac * len(stages)) % 1.0)
            time.sleep(1 / args.rate)
        status.mirror_state(None, run, Completed())

    sessions = [str(uuid.uuid4()) for _ in range(args.sessions)]
    started = time.time()
    threads = [threading.Thread(target=one_session, args=(s,)) for s in sessions]
    [t.start() for t in threads]
    [t.join() for t in threads]
    elapsed = time.time() - started

    with psycopg.connect(url) as conn:
        row_bytes = [r[0] for r in conn.execute(
            "SELECT octet_length(row_to_json(p)::text) FROM processing_status p")]
        final = [r[0] for r in conn.execute("SELECT status FROM processing_status")]
    drop_database(url)

    delays = sorted(w["delay"] for w in writes)
    per_session = [sum(1 for w in writes if w["session"] == s) for s in sessions]
    gaps, rates = [], []
    for s in sessions:
        times = [w["at"] for w in writes if w["session"] == s]
        gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
        rates.append((len(times) - 1) / (times[-1] - times[0]))
    print(f"simulated run: {args.run_s:.0f} s x {args.sessions} session(s), {args.rate:.0f} progress calls/s "
          f"({int(args.run_s * args.rate)} calls per session)")
    print(f"writes per session: {statistics.mean(per_session):.0f} in {elapsed:.1f} s; "
          f"rate between first and last write {max(rates):.2f} writes/s  (target <= 1/s)")
    print(f"closest two writes of a session: {min(gaps):.3f} s apart")
    print(f"RPC body bytes per write: max {max(w['bytes'] for w in writes)}, "
          f"mean {statistics.mean(w['bytes'] for w in writes):.0f}  (target <= 1024)")
    print(f"row as Realtime sees it (row_to_json): max {max(row_bytes)} bytes")
    def fig(ds):
        ds = sorted(ds)
        if len(ds) < 20:
            return f"n={len(ds)}: " + ", ".join(f"{d * 1000:.0f} ms" for d in ds)
        return (f"n={len(ds)}: "f"median {statistics.median(ds) * 1000:.0f} ms, p95 {ds[int(0.95 * (len(ds) - 1))] * 1000:.0f} ms, "
                f"max {ds[-1] * 1000:.0f} ms")

    print(f"update -> row, all writes: {fig(delays)}  (target p95 <= 1 s; progress waits up to one interval by design)")
    transitions = [w["delay"] for s in sessions for i, w in enumerate(x for x in writes if x["session"] == s)
                   if i == 0 or w["status"] != "RUNNING"]
    print(f"state change -> row (RUNNING start, terminal): {fig(transitions)}")
    print(f"final statuses: {sorted(set(final))}; all COMPLETED: {all(f == Status.COMPLETED.value for f in final)}")


if __name__ == "__main__":
    main()
