"""Mono mixes of several real voices with known turns, built with ffmpeg from tests/data, and the
diarization error rate against them (10 ms frames, no collar, overlap counted, best speaker mapping).

Each voice gets its own track on the shared timeline (its pieces where it speaks, silence
elsewhere); the mix is their sum. The reference of who speaks when is each track's own Silero
VAD, so pauses inside a turn are not counted as speech.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import DATA, ffmpeg
from vibeinsight.audio.decode import SAMPLE_RATE

# voice name -> (file, ffmpeg pan expression picking the channel, seconds with speech in it)
VOICES = {
    "jfk": ("jfk.flac", "mono|c0=c0", (0.0, 10.8)),
    "ja": ("ja_meeting.flac", "mono|c0=c0", (0.0, 10.4)),
    "left": ("stereo_diarization.wav", "mono|c0=c0", (0.3, 4.8)),
    "right": ("stereo_diarization.wav", "mono|c0=c1", (0.3, 2.6)),
}
RATE = SAMPLE_RATE  # the mixes are written at the rate the product decodes to
FRAME_S = 0.01


@dataclass
class Mix:
    path: Path
    voices: list[str]
    reference: dict[str, list[tuple[float, float]]]  # voice -> speech spans (s)
    duration_s: float


def turns_plan(voices: list[str], turns: int, seed: int, gap_s: tuple[float, float] = (0.4, 0.8),
               length_s: tuple[float, float] = (2.0, 4.0)) -> list[tuple[str, float, float, float]]:
    """(voice, at, piece start, piece end): voices take turns round-robin, each turn a random piece."""
    rng = random.Random(seed)
    plan, at = [], 0.5
    for i in range(turns):
        voice = voices[i % len(voices)]
        lo, hi = VOICES[voice][2]
        length = min(rng.uniform(*length_s), hi - lo)
        start = rng.uniform(lo, hi - length)
        plan.append((voice, round(at, 3), round(start, 3), round(start + length, 3)))
        at += length + rng.uniform(*gap_s)
    return plan


def build(dest_dir: Path, name: str, plan: list[tuple[str, float, float, float]]) -> Mix:
    dest_dir.mkdir(parents=True, exist_ok=True)
    duration = max(at + (e - s) for _, at, s, e in plan) + 0.5
    voices = list(dict.fromkeys(v for v, *_ in plan))
    tracks = {}
    for voice in voices:
        file, pan, _ = VOICES[voice]
        pieces = [(at, s, e) for v, at, s, e in plan if v == voice]
        graph = "".join(
            f"[0:a]pan={pan},aresample={RATE},atrim={s}:{e},asetpts=PTS-STARTPTS,adelay={int(at * 1000)},"
            f"apad=whole_dur={duration}[p{i}];" for i, (at, s, e) in enumerate(pieces))
        graph += "".join(f"[p{i}]" for i in range(len(pieces))) + \
            f"amix=inputs={len(pieces)}:normalize=0:duration=longest,atrim=0:{duration}[out]"
        track = dest_dir / f"{name}-{voice}.wav"
        ffmpeg("-i", str(DATA / file), "-filter_complex", graph, "-map", "[out]", "-ac", "1", "-ar", str(RATE),
               "-c:a", "pcm_s16le", str(track))
        tracks[voice] = track
    mix = dest_dir / f"{name}.wav"
    inputs = [a for t in tracks.values() for a in ("-i", str(t))]
    ffmpeg(*inputs, "-filter_complex",
           "".join(f"[{i}:a]" for i in range(len(tracks))) + f"amix=inputs={len(tracks)}:normalize=0[out]",
           "-map", "[out]", "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_s16le", str(mix))
    return Mix(path=mix, voices=voices, reference={v: vad_spans(t) for v, t in tracks.items()}, duration_s=duration)


def vad_spans(path: Path) -> list[tuple[float, float]]:
    from vibeinsight.audio.decode import decode_16k
    from vibeinsight.diarization import speech_spans

    return [(s / RATE, e / RATE) for s, e in speech_spans(decode_16k(path))]


def _frames(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    on = np.zeros(n, bool)
    for s, e in spans:
        on[int(round(s / FRAME_S)):int(round(e / FRAME_S))] = True
    return on


def diarization_error(reference: dict[str, list[tuple[float, float]]], turns, duration_s: float) -> float:
    """(missed + false alarm + confused speech) / reference speech, with the best one-to-one speaker map."""
    from scipy.optimize import linear_sum_assignment

    n = int(duration_s / FRAME_S) + 1
    ref = {k: _frames(v, n) for k, v in reference.items()}
    hyp_names = sorted({t.speaker for t in turns})
    hyp = {k: _frames([(t.start, t.end) for t in turns if t.speaker == k], n) for k in hyp_names}
    r, h = list(ref), list(hyp)
    overlap = np.array([[np.sum(ref[a] & hyp[b]) for b in h] for a in r]) if h else np.zeros((len(r), 0))
    rows, cols = linear_sum_assignment(-overlap) if h else ([], [])
    n_ref = sum(ref[a].astype(int) for a in r)
    n_hyp = sum(hyp[b].astype(int) for b in h) if h else np.zeros(n, int)
    correct = sum(ref[r[i]] & hyp[h[j]] for i, j in zip(rows, cols, strict=True)) if h else np.zeros(n, int)
    error = np.maximum(n_ref, n_hyp) - np.asarray(correct, int)
    return float(error.sum() / n_ref.sum())
