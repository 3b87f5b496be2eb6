"""A burst of N sessions from the first trigger to the last COMPLETED: one Fly Machine per run (the
fly-machines worker and the Machines stand-in) against the same burst on two always-on `process`
workers (--limit 2 each, the old set-up's per-Machine limit), on the same machine, printed as ratios
from one run. Both sides: a real Prefect server on PostgreSQL, `prefect deploy --all`, SeaweedFS, the
OpenAI stand-in, PostgreSQL status and ledger, the observer (tests/fly_stack.py).

Usage: .venv/bin/python bench/fly_burst.py [N ...]    (default: 6 20)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fly_stack import FlyStack, fly_stack  # noqa: E402


def burst(fs: FlyStack, n: int) -> dict:
    creates0 = len(fs.fly.create_times()) if fs.fly else 0
    throttled0 = fs.fly.count("POST", "/machines", 429) if fs.fly else 0
    t0 = time.monotonic()
    sessions = fs.trigger(n)
    runs = fs.wait_runs([r for _, r in sessions], timeout_s=3600)
    wall = time.monotonic() - t0
    out = {"wall_s": wall, "completed": sum(state == "COMPLETED" for state, _ in runs.values()), "n": n}
    if fs.fly:
        times = fs.fly.create_times()[creates0:]
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        out |= {"machines": len(times), "creates_per_s": (len(times) - 1) / span if span else float("nan"),
                "throttled": fs.fly.count("POST", "/machines", 429) - throttled0,
                "left": _left_after(fs, 60)}
    return out


def _left_after(fs: FlyStack, timeout_s: float) -> int:
    """Machines still there `timeout_s` after the last run ended (a command exits a few seconds after
    its run is COMPLETED; auto_destroy follows)."""
    deadline = time.monotonic() + timeout_s
    while fs.fly.live() and time.monotonic() < deadline:
        time.sleep(0.5)
    return len(fs.fly.live())


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [6, 20]
    results: dict[str, dict[int, dict]] = {}
    for mode in ("fly", "process"):
        with tempfile.TemporaryDirectory(prefix=f"fly-burst-{mode}-") as tmp:
            t0 = time.monotonic()
            with fly_stack(Path(tmp), mode=mode, process_workers=2, process_limit=2) as fs:
                print(f"[{mode}] stack ready in {time.monotonic() - t0:.0f} s", flush=True)
                results[mode] = {}
                for n in sizes:
                    r = results[mode][n] = burst(fs, n)
                    extra = (f", {r['machines']} Machines, {r['creates_per_s']:.2f} creates/s, {r['throttled']} x 429, "
                             f"{r['left']} left 60 s later" if mode == "fly" else "")
                    print(f"[{mode}] N={n}: {r['wall_s']:.1f} s first trigger to last COMPLETED, "
                          f"{r['completed']}/{n} COMPLETED{extra}", flush=True)
    print("\nN   Machines (s)  2 process workers (s)  ratio  creates/s  429s")
    for n in sizes:
        f, p = results["fly"][n], results["process"][n]
        print(f"{n:<3} {f['wall_s']:>12.1f}  {p['wall_s']:>21.1f}  {f['wall_s'] / p['wall_s']:>5.2f}  "
              f"{f['creates_per_s']:>9.2f}  {f['throttled']:>4}")


if __name__ == "__main__":
    main()
