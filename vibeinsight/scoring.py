"""Confidence from Whisper's log-probabilities, and text normalisation for error rates."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable


def segment_confidence(avg_logprob: float, no_speech_prob: float = 0.0) -> float:
    """exp(mean token log-prob), discounted by the chance the window holds no speech."""
    p = math.exp(min(0.0, avg_logprob)) * (1.0 - min(1.0, max(0.0, no_speech_prob)))
    return round(min(1.0, max(0.0, p)), 4)


def weighted_confidence(items: Iterable[tuple[float, float]]) -> float | None:
    """Duration-weighted mean of (confidence, seconds) pairs."""
    total = weight = 0.0
    for conf, seconds in items:
        total += conf * max(seconds, 1e-3)
        weight += max(seconds, 1e-3)
    return round(total / weight, 4) if weight else None


_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower case, NFKC, no punctuation, single spaces: the form error rates compare."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def normalize_chars(text: str) -> list[str]:
    """Characters without spaces or punctuation, for a character error rate (Japanese)."""
    return list(normalize_text(text).replace(" ", ""))
