"""The analyzer with word timings (schema 1.1) and diarized speakers."""

from __future__ import annotations

import pytest

from vibeinsight.analysis import analyze
from vibeinsight.schemas import Segment, Word

pytestmark = pytest.mark.unit


def seg(speaker, words):
    return Segment(start=words[0][1], end=words[-1][2], text=" ".join(w for w, _, _ in words), confidence=0.8,
                   speaker=speaker, words=[Word(start=s, end=e, word=" " + w, probability=0.9) for w, s, e in words])


def test_pauses_speech_and_rate_come_from_words_not_from_segment_spans():
    # One 30 s segment as a batched window gives it, with a 4 s and a 0.6 s pause between words.
    long = Segment(start=0.0, end=30.0, text="we ship it today then review", confidence=0.9, words=[
        Word(start=0.0, end=1.0, word=" we", probability=0.9), Word(start=1.0, end=2.0, word=" ship", probability=0.9),
        Word(start=6.0, end=7.0, word=" it", probability=0.9), Word(start=7.6, end=8.0, word=" today", probability=0.9),
        Word(start=8.0, end=9.0, word=" then", probability=0.9), Word(start=9.0, end=10.0, word=" review", probability=0.9)])
    a = analyze([long], duration_s=30.0, language="en")
    assert a["timing_basis"] == "words"
    assert a["speech_s"] == pytest.approx(10.0 - 4.0 - 0.6)
    assert a["pauses"]["count"] == 2 and a["pauses"]["longest_s"] == 4.0 and a["pauses"]["total_s"] == 4.6
    assert a["speaking_rate"]["value"] == round(6 / (5.4 / 60), 1)


def test_per_speaker_talk_time_share_and_turns():
    segments = [seg("S1", [("hello", 0.0, 0.5), ("there", 0.5, 1.0)]), seg("S2", [("hi", 1.5, 2.0)]),
                seg("S1", [("so", 2.5, 3.0)]), seg("S1", [("anyway", 3.2, 4.0)]), seg("S2", [("ok", 4.5, 5.0)])]
    sp = analyze(segments, duration_s=6.0, language="en")["speakers"]
    assert sp["S1"] == {"talk_s": 2.3, "share": round(2.3 / 3.3, 4), "segments": 3, "turns": 2, "words": 4}
    assert sp["S2"] == {"talk_s": 1.0, "share": round(1.0 / 3.3, 4), "segments": 2, "turns": 2, "words": 2}
