"""Metrics that need no language model: pace, pauses, fillers, terms, confidence, speakers.

Where the transcript has word timings, speech time, pauses and speaking rates come from the
words (a batched segment can span 30 s with pauses inside); else from the segments.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from vibeinsight.schemas import Segment

ENGINE = "local-metrics"
PAUSE_MIN_S = 0.5
LOW_CONFIDENCE = 0.5

FILLERS_EN = ("um", "uh", "erm", "er", "hmm", "mm", "you know", "i mean")
FILLERS_JA = ("えーと", "えっと", "ええと", "えー", "あのー", "そのー", "まあ", "うーん", "んー")

_STOP_EN = frozenset(
    "the a an and or but if of to in on at for with from by as is are was were be been being it its "
    "this that these those i you he she we they me him her us them my your our their what which who "
    "whom do does did not no so can could will would should shall may might must have has had just "
    "than then there here when where why how all any some about into over also very".split()
)
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+")
_JA_TERM = re.compile(r"[\u4e00-\u9fff\u3005]{2,}|[\u30a0-\u30ff]{2,}")
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def is_cjk_text(text: str) -> bool:
    letters = [c for c in text if not c.isspace()]
    return bool(letters) and sum(bool(_CJK.match(c)) for c in letters) / len(letters) > 0.3


def analyze(segments: Sequence[Segment], duration_s: float, language: str, top_n: int = 10) -> dict:
    text = " ".join(s.text.strip() for s in segments).strip()
    cjk = language in {"ja", "zh", "ko"} or is_cjk_text(text)
    speech_s = _union_seconds([span for s in segments for span in _spoken(s)])
    # Japanese has no spaces between words: count characters instead (and Latin words apart).
    words = len(_LATIN_WORD.findall(text)) if cjk else len(text.split())
    characters = len(re.sub(r"\s", "", text))
    minutes = speech_s / 60 if speech_s else 0.0
    rate_value, rate_unit = (characters, "characters_per_minute") if cjk else (words, "words_per_minute")
    return {
        "engine": ENGINE,
        "duration_s": round(duration_s, 3),
        "speech_s": round(speech_s, 3),
        "speech_ratio": round(speech_s / duration_s, 4) if duration_s else 0.0,
        "segments": len(segments),
        "words": words,
        "characters": characters,
        "speaking_rate": {"value": round(rate_value / minutes, 1) if minutes else 0.0, "unit": rate_unit},
        "pauses": _pauses(segments),
        "timing_basis": "words" if any(s.words for s in segments) else "segments",
        "fillers": _fillers(text, cjk, minutes),
        "top_terms": [{"term": t, "count": c} for t, c in _terms(text, cjk).most_common(top_n)],
        "confidence": _confidence(segments),
        "speakers": _speakers(segments),
    }


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def _spoken(segment: Segment) -> list[tuple[float, float]]:
    """When the segment's words were spoken; the whole segment when it has no word timings."""
    return [(w.start, w.end) for w in segment.words] if segment.words else [(segment.start, segment.end)]


def _pauses(segments: Sequence[Segment]) -> dict:
    gaps: list[float] = []
    end = None
    for start, stop in sorted(span for s in segments for span in _spoken(s)):
        if end is not None and start - end >= PAUSE_MIN_S:
            gaps.append(start - end)
        end = stop if end is None else max(end, stop)
    return {
        "min_pause_s": PAUSE_MIN_S,
        "count": len(gaps),
        "total_s": round(sum(gaps), 3),
        "longest_s": round(max(gaps), 3) if gaps else 0.0,
        "mean_s": round(sum(gaps) / len(gaps), 3) if gaps else 0.0,
    }


def _fillers(text: str, cjk: bool, minutes: float) -> dict:
    counts: Counter[str] = Counter()
    if cjk:
        rest = text
        for term in FILLERS_JA:  # longest first, removed once counted
            n = rest.count(term)
            if n:
                counts[term] = n
                rest = rest.replace(term, " ")
    else:
        lowered = " " + re.sub(r"[^\w\s']", " ", text.lower()) + " "
        for term in FILLERS_EN:
            n = len(re.findall(rf"(?<=\s){re.escape(term)}(?=\s)", lowered))
            if n:
                counts[term] = n
    total = sum(counts.values())
    return {"total": total, "per_minute": round(total / minutes, 2) if minutes else 0.0, "terms": dict(counts)}


def _terms(text: str, cjk: bool) -> Counter[str]:
    terms: Counter[str] = Counter()
    if cjk:
        terms.update(_JA_TERM.findall(text))
    terms.update(w.lower() for w in _LATIN_WORD.findall(text) if len(w) > 2 and w.lower() not in _STOP_EN)
    return terms


def _confidence(segments: Sequence[Segment]) -> dict:
    values = sorted(s.confidence for s in segments)
    if not values:
        return {"mean": None, "min": None, "p10": None, "low_segments": 0, "low_threshold": LOW_CONFIDENCE}
    return {
        "mean": round(sum(values) / len(values), 4),
        "min": values[0],
        "p10": values[int(0.1 * (len(values) - 1))],
        "low_segments": sum(v < LOW_CONFIDENCE for v in values),
        "low_threshold": LOW_CONFIDENCE,
    }


def _speakers(segments: Sequence[Segment]) -> dict:
    """Per speaker: talk time, share of all talk, segments, turns (runs of segments in time order
    without another speaker between), words (Latin words, or characters for CJK text)."""
    out: dict[str, dict] = {}
    previous = None
    for s in sorted(segments, key=lambda s: s.start):
        if not s.speaker:
            continue
        d = out.setdefault(s.speaker, {"talk_s": 0.0, "share": 0.0, "segments": 0, "turns": 0, "words": 0})
        d["talk_s"] = round(d["talk_s"] + _union_seconds(_spoken(s)), 3)
        d["segments"] += 1
        d["turns"] += s.speaker != previous
        d["words"] += len(s.words) if s.words else len(s.text.split())
        previous = s.speaker
    total = sum(d["talk_s"] for d in out.values())
    for d in out.values():
        d["share"] = round(d["talk_s"] / total, 4) if total else 0.0
    return out
