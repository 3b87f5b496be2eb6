"""Where to cut a recording for transcription: at silences, within length and size caps."""

from __future__ import annotations

import math
from collections.abc import Sequence

Span = tuple[float, float]


def max_chunk_seconds(max_chunk_s: float, max_chunk_bytes: int, bitrate_kbps: int) -> float:
    """The length cap, tightened so a chunk at this bitrate stays under the byte cap (10 % headroom)."""
    by_size = max_chunk_bytes * 8 / (bitrate_kbps * 1000) * 0.9
    return min(max_chunk_s, by_size)


def plan_chunks(
    duration: float,
    silences: Sequence[Span],
    max_chunk_s: float,
    min_chunk_s: float = 30.0,
    parallel: int = 1,
) -> list[Span]:
    """Cover [0, duration] with spans no longer than max_chunk_s.

    One chunk at a time (parallel=1): each cut goes in the middle of the longest silence in the
    second half of the allowed window (so chunks stay long), else the longest silence anywhere past
    min_chunk_s, else a hard cut at the cap. With `parallel` chunks transcribed at once, the spans
    come in a multiple of `parallel` of near-equal length instead, so no worker waits on a straggler.
    """
    if duration <= 0:
        return []
    min_chunk_s = min(min_chunk_s, max_chunk_s / 2)
    if parallel > 1:
        return _balanced(duration, silences, max_chunk_s, min_chunk_s, parallel)
    spans: list[Span] = []
    pos = 0.0
    while duration - pos > max_chunk_s:
        limit = pos + max_chunk_s
        cut = _best_cut(silences, pos + max_chunk_s / 2, limit) or _best_cut(silences, pos + min_chunk_s, limit)
        cut = cut if cut is not None else limit
        spans.append((pos, cut))
        pos = cut
    spans.append((pos, duration))
    return spans


def _balanced(duration: float, silences: Sequence[Span], max_chunk_s: float, min_chunk_s: float,
              parallel: int) -> list[Span]:
    """n spans (a multiple of `parallel`, none under min_chunk_s, none over max_chunk_s), each cut at
    one of the longest silences within a quarter of a share of its even split, the nearest of them."""
    least = math.ceil(duration / max_chunk_s)
    n = math.ceil(least / parallel) * parallel
    if duration / n > 0.9 * max_chunk_s:  # shares at the cap leave a cut no room to find a silence
        n += parallel
    n = max(least, min(n, int(duration // min_chunk_s)))
    step = duration / n
    spans: list[Span] = []
    pos = 0.0
    for i in range(1, n):
        ideal = i * step
        lo = max(ideal - step / 4, pos + min_chunk_s, duration - (n - i) * max_chunk_s)
        hi = min(ideal + step / 4, pos + max_chunk_s, duration - (n - i) * min_chunk_s)
        cut = _nearest_cut(silences, ideal, lo, hi)
        cut = cut if cut is not None else min(max(ideal, lo), hi)
        spans.append((pos, cut))
        pos = cut
    spans.append((pos, duration))
    return spans


def _nearest_cut(silences: Sequence[Span], ideal: float, lo: float, hi: float) -> float | None:
    """The middle of the silence nearest `ideal` among the longest in [lo, hi] (at least 80 % of the
    longest there): a long pause ends a sentence, a short one may split it."""
    inside = [(s, e) for s, e in silences if lo <= (s + e) / 2 <= hi]
    if not inside:
        return None
    longest = max(e - s for s, e in inside)
    mids = [(s + e) / 2 for s, e in inside if e - s >= 0.8 * longest]
    return min(mids, key=lambda m: abs(m - ideal))


def _best_cut(silences: Sequence[Span], lo: float, hi: float) -> float | None:
    best: Span | None = None
    for start, end in silences:
        mid = (start + end) / 2
        if lo <= mid <= hi and (best is None or end - start >= best[1] - best[0]):
            best = (start, end)
    return None if best is None else (best[0] + best[1]) / 2


def total_silence(silences: Sequence[Span]) -> float:
    return sum(max(0.0, e - s) for s, e in silences)
