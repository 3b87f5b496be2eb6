"""Fixed cost of `vibeinsight process` before its first stage, against a bare embedded Prefect flow.

Run: .venv/bin/python bench/cold_start.py [runs]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, bench_home, run_cli  # noqa: E402

BARE = """
import time, sys
t0 = float(sys.argv[1])
from prefect import flow
@flow
def bare():
    print(time.time() - t0, flush=True)
bare()
"""


def bare_prefect(home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home / "bare-prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", PREFECT_LOGGING_LEVEL="CRITICAL")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BARE)
    p = subprocess.run([sys.executable, f.name, str(time.time())], capture_output=True, text=True, env=env)
    return float(p.stdout.strip().splitlines()[0])


def main(runs: int = 3) -> None:
    home = bench_home()
    sample = ROOT / "vibeinsight" / "samples" / "standup-en.ogg"
    run_cli("process", str(sample), home=home)  # first run: migrates Prefect's database, joins the model
    ours = [run_cli("process", str(sample), home=home)[0]["timings"]["startup"] for _ in range(runs)]
    bare_prefect(home)  # its first run migrates its own database
    bare = [bare_prefect(home) for _ in range(runs)]
    print(f"vibeinsight process, start to first stage: median {statistics.median(ours):.2f} s "
          f"(runs: {', '.join(f'{x:.2f}' for x in ours)}); target < 5 s")
    print(f"bare Prefect flow in embedded mode, start to flow body: median {statistics.median(bare):.2f} s "
          f"(runs: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"ratio ours / bare: {statistics.median(ours) / statistics.median(bare):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
