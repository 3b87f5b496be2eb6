"""Decoding windows for Whisper when the language may change from one speaker turn to the next.

faster-whisper's batched pipeline packs speech into 30 s windows and, with multilingual=True,
decodes each window in the language detected in it. A window holding a Japanese turn and an
English one is decoded in the larger language and the other turn comes out as nothing. Packing
per speaker turn keeps one speaker, and so one language, per window.
"""

from __future__ import annotations

from collections.abc import Sequence

WINDOW_S = 30.0  # Whisper's window
PAD_S = 0.2  # context either side of a turn (the diarization VAD cuts close to the speech)


def by_turn(turns: Sequence[tuple[float, float, str]], duration: float, max_s: float = WINDOW_S,
            pad_s: float = PAD_S) -> list[tuple[float, float]]:
    """Windows (start, end) in seconds: consecutive turns of one speaker joined up to max_s, a
    longer turn cut into max_s pieces, each widened by pad_s without reaching into the next turn."""
    runs: list[list] = []
    for start, end, who in sorted(turns):
        if end <= 0 or start >= duration:
            continue
        start, end = max(0.0, start), min(duration, end)
        if runs and runs[-1][2] == who and end - runs[-1][0] <= max_s:
            runs[-1][1] = end
            continue
        while end - start > max_s:
            runs.append([start, start + max_s, who])
            start += max_s
        runs.append([start, end, who])
    out: list[tuple[float, float]] = []
    for i, (start, end, _) in enumerate(runs):
        lo = max(0.0, start - pad_s, runs[i - 1][1] if i else 0.0)
        hi = min(duration, end + pad_s, runs[i + 1][0] if i + 1 < len(runs) else duration)
        out.append((round(lo, 3), round(min(hi, lo + max_s), 3)))
    return out
