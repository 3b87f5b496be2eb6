"""Real media files made with ffmpeg for tests (into a temporary folder, never committed)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ffmpeg


def silence(path: Path, seconds: float = 8.0, rate: int = 16000) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r={rate}:cl=mono", "-t", str(seconds), str(path))
    return path


def tone(path: Path, seconds: float) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=f=440:d={seconds}", str(path))
    return path


def video(path: Path, audio: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-i", str(audio), "-shortest",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))
    return path


def telephone(path: Path, audio: Path) -> Path:
    """8 kHz mono mu-law, as a phone line delivers it."""
    ffmpeg("-i", str(audio), "-ac", "1", "-ar", "8000", "-c:a", "pcm_mulaw", str(path))
    return path


def with_gaps(path: Path, speech: Path, repeats: int, gap_s: float) -> Path:
    """speech, gap, speech, gap, ... as one mono 16 kHz WAV."""
    labels = "".join(f"[a{i}]" for i in range(repeats))
    pads = "".join(f"[a{i}]apad=pad_dur={gap_s}[s{i}];" for i in range(repeats))
    concat = "".join(f"[s{i}]" for i in range(repeats)) + f"concat=n={repeats}:v=0:a=1[out]"
    graph = f"[0:a]aresample=16000,aformat=channel_layouts=mono,asplit={repeats}{labels};{pads}{concat}"
    ffmpeg("-i", str(speech), "-filter_complex", graph, "-map", "[out]", str(path))
    return path
