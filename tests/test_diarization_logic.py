"""Diarization's pure parts: features, windows, clustering, turns, speakers onto words, decoding windows."""

from __future__ import annotations

import numpy as np
import pytest

from vibeinsight.audio.windows import by_turn
from vibeinsight.diarization import (
    EMBEDDING_ONNX,
    Diarization,
    Turn,
    assign_speakers,
    check_model,
    cluster,
    fbank,
    label_turns,
    windows_of,
)
from vibeinsight.schemas import Segment, Word

pytestmark = pytest.mark.unit


def test_fbank_puts_a_tone_in_its_mel_band_and_is_mean_normalised():
    t = np.arange(16000) / 16000
    feats = fbank(np.sin(2 * np.pi * 1000 * t).astype(np.float32) * 0.5)
    assert feats.shape == (1 + (16000 - 400) // 160, 80)
    assert np.allclose(feats.mean(axis=0), 0, atol=1e-3)
    # 1 kHz is mel 1000 of the Kaldi scale; bands are spaced evenly in mel from 20 Hz to 8 kHz
    lo, hi = 1127 * np.log(1 + 20 / 700), 1127 * np.log(1 + 8000 / 700)
    expected = int(round((1127 * np.log(1 + 1000 / 700) - lo) / ((hi - lo) / 81))) - 1
    raw = fbank(np.r_[np.zeros(16000, np.float32), np.sin(2 * np.pi * 1000 * t).astype(np.float32)])
    assert abs(int(np.argmax(raw[-10:].mean(axis=0))) - expected) <= 1
    assert fbank(np.zeros(100, np.float32)).shape == (0, 80)


def test_windows_cover_each_speech_span():
    rate = 16000
    spans = [(0, int(0.3 * rate)), (rate, int(2.0 * rate)), (3 * rate, int(6.2 * rate))]
    w = windows_of(spans)
    assert (0, int(0.3 * rate)) not in w  # too short to place a voice
    assert (rate, 2 * rate) in w  # a short span is one window
    long = [x for x in w if x[0] >= 3 * rate]
    assert all(e - s == int(1.5 * rate) for s, e in long)
    assert long[0][0] == 3 * rate and long[-1][1] == int(6.2 * rate)  # first at the start, last end-aligned
    assert all(b[0] - a[0] <= int(0.75 * rate) for a, b in zip(long, long[1:], strict=False))


def _voices(rng, centres, per, noise=0.3):
    return np.concatenate([c + noise * rng.standard_normal((per, len(c))) for c in centres])


def test_clustering_finds_the_voices_and_honours_counts():
    rng = np.random.default_rng(0)
    centres = [rng.standard_normal(192) for _ in range(3)]
    x = _voices(rng, centres, 40, noise=0.05)
    labels = cluster(x)
    assert len(set(labels)) == 3
    assert all(len(set(labels[i * 40:(i + 1) * 40])) == 1 for i in range(3))
    assert len(set(cluster(x, num_speakers=2))) == 2
    assert len(set(cluster(x, max_speakers=2))) == 2
    assert len(set(cluster(x[:40]))) == 1  # one voice stays one speaker
    assert list(cluster(x[:1])) == [0] and len(cluster(np.zeros((0, 192)))) == 0


def test_a_stray_window_joins_the_nearest_big_cluster():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(192), rng.standard_normal(192)
    x = np.concatenate([_voices(rng, [a], 50, 0.05), [(a + b) / 2 + 0.6 * rng.standard_normal(192)],
                        _voices(rng, [b], 50, 0.05)])
    assert len(set(cluster(x))) == 2


def test_turns_take_the_nearest_window_label_and_name_speakers_in_order():
    turns = label_turns([(0.0, 2.0), (3.0, 5.0)], np.array([0.5, 1.5, 3.5, 4.5]), np.array([1, 1, 0, 1]))
    assert [t.speaker for t in turns] == ["S1", "S2", "S1"]
    assert turns[0] == Turn(0.0, 2.0, "S1") and turns[1].start == 3.0 and turns[-1].end == 5.0
    assert 3.9 <= turns[1].end <= 4.1  # the change sits halfway between the window centres


def seg(start, end, words, lang="en"):
    return Segment(start=start, end=end, text="".join(w for w, _, _ in words).strip(), confidence=0.9,
                   language=lang, words=[Word(start=s, end=e, word=w, probability=0.9) for w, s, e in words])


def test_a_segment_is_split_where_its_words_change_speaker():
    d = Diarization(turns=[Turn(0.0, 2.0, "S1"), Turn(2.2, 5.0, "S2")], speakers=2, speech_s=4.8, windows=6)
    s = seg(0.0, 5.0, [(" ask", 0.1, 0.5), (" not", 0.6, 1.0), (" what", 2.5, 3.0), (" you", 3.1, 3.5)])
    out = assign_speakers([s, Segment(start=4.0, end=4.9, text="hm", confidence=0.5)], d)
    assert [(o.speaker, o.text, o.start, o.end) for o in out] == [
        ("S1", "ask not", 0.0, 1.0), ("S2", "what you", 2.5, 5.0), ("S2", "hm", 4.0, 4.9)]
    assert all(w.start >= o.start and w.end <= o.end for o in out for w in o.words or [])
    assert s.speaker is None  # the input is not changed


def test_decoding_windows_never_cross_a_change_of_speaker():
    turns = [(0.0, 3.0, "S1"), (3.5, 6.0, "S1"), (6.4, 9.0, "S2"), (9.5, 75.0, "S1")]
    w = by_turn(turns, duration=76.0)
    assert w[0] == (0.0, 6.2) and w[1] == (6.2, 9.2)
    assert all(b - a <= 30.0 for a, b in w) and w[-1][1] == 75.2
    assert all(a2 >= b1 for (_, b1), (a2, _) in zip(w, w[1:], strict=False))  # no overlap


def test_the_committed_model_is_the_pinned_export():
    assert EMBEDDING_ONNX.stat().st_size > 20_000_000
    check_model()
