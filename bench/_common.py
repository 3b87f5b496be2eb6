"""Helpers for the benchmarks: long recordings built from the test audio (tests/data), and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "tests" / "data"  # the repository's test recordings (tests/data/README.md)


def speech_loop(dest: Path, minutes: float, rate: int = 16000, channels: int = 1,
                parts: tuple[str, ...] = ("ja_meeting.flac",)) -> Path:
    """Real speech with pauses, repeated to `minutes`, as PCM WAV. One language per recording, as
    in a real meeting: a mix of languages makes Whisper decode one language as another."""
    if dest.exists():
        return dest
    parts = [AUDIO / p for p in parts]
    inputs: list[str] = []
    graph = ""
    for i, p in enumerate(parts):
        inputs += ["-i", str(p)]
        graph += f"[{i}:a]aresample=16000,aformat=channel_layouts=mono,apad=pad_dur=1.5[p{i}];"
    graph += "".join(f"[p{i}]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1[one]"
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "unit.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[one]", str(unit)],
                       check=True)
        layout = "mono" if channels == 1 else "stereo"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(unit), "-t", str(minutes * 60),
                        "-af", f"aresample={rate},aformat=channel_layouts={layout}", "-c:a", "pcm_s16le", str(dest)],
                       check=True)
    return dest


def run_cli(*args: str, home: Path, env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e["VIBEINSIGHT_HOME"] = str(home)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "vibeinsight", *args, "--json"], capture_output=True, text=True, env=e)
    if p.returncode != 0:
        raise SystemExit(f"vibeinsight {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout), p


def bench_home() -> Path:
    home = Path(os.environ.get("VIBEINSIGHT_BENCH_HOME", Path.home() / ".vibeinsight-bench"))
    home.mkdir(parents=True, exist_ok=True)
    return home


@contextmanager
def embedded_prefect(home: Path) -> Iterator[object]:
    """Prefect's embedded API server for an in-process benchmark (call wait_ready() before flows)."""
    os.environ["VIBEINSIGHT_HOME"] = str(home)
    from vibeinsight.cli.embedded_server import EmbeddedServer, configure_prefect_env

    configure_prefect_env(home)
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    server = EmbeddedServer(home / "logs" / "bench-server.log")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server
    finally:
        server.stop()
