"""Where to cut a recording for transcription: at silences, within length and size caps."""

from __future__ import annotations

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
) -> list[Span]:
    """Cover [0, duration] with spans no longer than max_chunk_s.

    Each cut goes in the middle of the longest silence in the second half of the
    allowed window (so chunks stay long), else the longest silence anywhere past
    min_chunk_s, else a hard cut at the cap.
    """
    if duration <= 0:
        return []
    min_chunk_s = min(min_chunk_s, max_chunk_s / 2)
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


def _best_cut(silences: Sequence[Span], lo: float, hi: float) -> float | None:
    best: Span | None = None
    for start, end in silences:
        mid = (start + end) / 2
        if lo <= mid <= hi and (best is None or end - start >= best[1] - best[0]):
            best = (start, end)
    return None if best is None else (best[0] + best[1]) / 2


def total_silence(silences: Sequence[Span]) -> float:
    return sum(max(0.0, e - s) for s, e in silences)
