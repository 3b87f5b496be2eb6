import pytest

from vibeinsight.analysis import analyze
from vibeinsight.schemas import Segment

pytestmark = pytest.mark.unit


def seg(start, end, text, conf=0.9, speaker=None):
    return Segment(start=start, end=end, text=text, confidence=conf, speaker=speaker)


def test_english_metrics_by_hand():
    segments = [
        seg(0.0, 10.0, "Um so the pipeline uploads audio", 0.9),
        seg(12.0, 22.0, "uh the pipeline transcribes audio you know", 0.4),
        seg(22.2, 30.0, "and the summary goes out", 0.8),
    ]
    a = analyze(segments, duration_s=40.0, language="en")
    assert a["engine"] == "local-metrics"
    assert a["speech_s"] == 30.0 - 2.0 - 0.2
    assert a["speech_ratio"] == round(27.8 / 40, 4)
    assert a["words"] == 6 + 7 + 5
    assert a["speaking_rate"] == {"value": round(18 / (27.8 / 60), 1), "unit": "words_per_minute"}
    # one pause of 2 s; the 0.2 s gap is below the pause threshold
    assert a["pauses"]["count"] == 1 and a["pauses"]["longest_s"] == 2.0
    assert a["fillers"]["terms"] == {"um": 1, "uh": 1, "you know": 1}
    terms = {t["term"]: t["count"] for t in a["top_terms"]}
    assert terms["pipeline"] == 2 and terms["audio"] == 2 and "the" not in terms
    assert a["confidence"]["min"] == 0.4 and a["confidence"]["low_segments"] == 1
    assert a["confidence"]["mean"] == round((0.9 + 0.4 + 0.8) / 3, 4)


def test_japanese_counts_characters_and_terms():
    segments = [seg(0.0, 6.0, "えーと、本日の会議では音声処理について説明します"),
                seg(7.0, 12.0, "まあ、音声処理のパイプラインです")]
    a = analyze(segments, duration_s=12.0, language="ja")
    chars = len("えーと、本日の会議では音声処理について説明します") + len("まあ、音声処理のパイプラインです")
    assert a["characters"] == chars
    assert a["speaking_rate"]["unit"] == "characters_per_minute"
    assert a["speaking_rate"]["value"] == round(chars / (11.0 / 60), 1)
    assert a["fillers"]["terms"] == {"えーと": 1, "まあ": 1}
    terms = {t["term"]: t["count"] for t in a["top_terms"]}
    assert terms["音声処理"] == 2 and terms["パイプライン"] == 1


def test_speakers_and_empty_transcript():
    a = analyze([seg(0, 2, "hello", speaker="left"), seg(1, 4, "hi there", speaker="right")], 5.0, "en")
    assert a["speakers"] == {"left": {"talk_s": 2.0, "share": 0.4, "segments": 1, "turns": 1, "words": 1},
                             "right": {"talk_s": 3.0, "share": 0.6, "segments": 1, "turns": 1, "words": 2}}
    assert a["speech_s"] == 4.0  # overlapping speech counted once
    empty = analyze([], 8.0, "und")
    assert empty["speech_ratio"] == 0.0 and empty["confidence"]["mean"] is None and empty["top_terms"] == []
