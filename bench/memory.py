"""Peak RSS of `vibeinsight process` on a 60-minute 44.1 kHz stereo WAV versus a 5-minute one.

Each run is its own process; its peak resident set is read from the kernel when it exits.
Run: .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, speech_loop  # noqa: E402


def peak_rss_mb(audio: Path, home: Path) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["VIBEINSIGHT_HOME"] = str(home)
    t0 = time.perf_counter()
    # A fresh interpreter per run, so getrusage(RUSAGE_CHILDREN) holds only this run's processes.
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'vibeinsight', 'process', sys.argv[1], '--json'],"
        " stdout=subprocess.DEVNULL)\n"
        "assert p.returncode == 0, p.returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(audio)], capture_output=True, text=True, env=env, check=True)
    return int(p.stdout.strip()) / 1024, time.perf_counter() - t0


def main() -> None:
    home = bench_home()
    tmp = Path(tempfile.gettempdir())
    five = speech_loop(tmp / "vibeinsight-bench-ja-5min-44k-stereo.wav", 5, rate=44100, channels=2)
    sixty = speech_loop(tmp / "vibeinsight-bench-ja-60min-44k-stereo.wav", 60, rate=44100, channels=2)
    m5, t5 = peak_rss_mb(five, home)
    m60, t60 = peak_rss_mb(sixty, home)
    print(f"5-minute  44.1 kHz stereo WAV ({five.stat().st_size / 1e6:.0f} MB): peak RSS {m5:.0f} MB, wall {t5:.0f} s")
    print(f"60-minute 44.1 kHz stereo WAV ({sixty.stat().st_size / 1e6:.0f} MB): peak RSS {m60:.0f} MB, wall {t60:.0f} s")
    print(f"peak RSS ratio 60 min / 5 min: {m60 / m5:.3f} (target <= 1.3)")


if __name__ == "__main__":
    main()
