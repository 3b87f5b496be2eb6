from itertools import pairwise

import pytest

from vibeinsight.audio.chunking import max_chunk_seconds, plan_chunks, total_silence

pytestmark = pytest.mark.unit


def _contiguous(spans, duration):
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(duration)
    for (_, end), (start, _) in pairwise(spans):
        assert end == start


def test_short_recording_is_one_chunk():
    assert plan_chunks(42.0, [(10.0, 11.0)], max_chunk_s=600) == [(0.0, 42.0)]


def test_cuts_in_the_middle_of_the_longest_late_silence():
    silences = [(100.0, 101.0), (400.0, 403.0), (520.0, 521.0), (900.0, 900.5)]
    spans = plan_chunks(1000.0, silences, max_chunk_s=600, min_chunk_s=30)
    _contiguous(spans, 1000.0)
    # window for the first cut is [300, 600]: the 3 s silence beats the 1 s one
    assert spans[0] == (0.0, 401.5)
    assert all(e - s <= 600 for s, e in spans)


def test_hard_cut_at_the_cap_without_silence():
    spans = plan_chunks(1500.0, [], max_chunk_s=600)
    assert spans == [(0.0, 600.0), (600.0, 1200.0), (1200.0, 1500.0)]


def test_silence_too_early_is_not_used():
    # a cut at 5 s would leave a uselessly small chunk
    spans = plan_chunks(700.0, [(4.0, 6.0)], max_chunk_s=600, min_chunk_s=30)
    assert spans[0] == (0.0, 600.0)


def test_byte_cap_tightens_length_cap():
    # 24 kb/s: 20 MiB hold ~6990 s; with 10 % headroom ~6291 s
    assert max_chunk_seconds(10_000, 20 * 1024**2, 24) == pytest.approx(20 * 1024**2 * 8 / 24_000 * 0.9)
    assert max_chunk_seconds(600, 20 * 1024**2, 24) == 600


def test_every_chunk_under_cap_for_many_silences():
    silences = [(t, t + 0.6) for t in range(7, 3600, 13)]
    spans = plan_chunks(3600.0, silences, max_chunk_s=300, min_chunk_s=30)
    _contiguous(spans, 3600.0)
    assert all(e - s <= 300 for s, e in spans)
    # every cut but the last lands inside a silence
    for _, end in spans[:-1]:
        assert any(s <= end <= e for s, e in silences)


def test_total_silence():
    assert total_silence([(0, 1.5), (3, 4)]) == 2.5


@pytest.mark.parametrize("duration", [61.0, 300.0, 301.0, 1234.5, 3600.0])
@pytest.mark.parametrize("parallel", [2, 3, 4])
def test_parallel_chunks_come_in_balanced_multiples(duration, parallel):
    silences = [(t, t + 0.5) for t in range(5, int(duration), 5)]
    spans = plan_chunks(duration, silences, max_chunk_s=180, min_chunk_s=30, parallel=parallel)
    _contiguous(spans, duration)
    lengths = [e - s for s, e in spans]
    assert max(lengths) <= 180 and min(lengths) >= 30
    # as many chunks as the cap needs, rounded up so every worker gets a share (unless under min_chunk_s)
    assert len(spans) % parallel == 0 or len(spans) == int(duration // 30)
    assert max(lengths) <= 1.6 * min(lengths)  # each cut within a quarter share of the even split
    for _, end in spans[:-1]:  # at a silence: one lies every 5 s, inside each cut's range
        assert any(s <= end <= e for s, e in silences)


def test_parallel_chunks_cut_hard_without_silence_and_keep_short_recordings_whole():
    assert plan_chunks(300.0, [], max_chunk_s=180, parallel=2) == [(0.0, 150.0), (150.0, 300.0)]
    assert plan_chunks(45.0, [], max_chunk_s=180, parallel=2) == [(0.0, 45.0)]  # two halves under 30 s: no
    # two shares of 150 s would sit at the cap with no room to move a cut: four of 75 s
    assert plan_chunks(300.0, [], max_chunk_s=150, parallel=2) == [(0.0, 75.0), (75.0, 150.0), (150.0, 225.0),
                                                                    (225.0, 300.0)]


def test_parallel_cut_prefers_a_sentence_pause_to_a_breath():
    # near the even split (150 s) a 0.4 s breath; 20 s off it, a 1.5 s pause between sentences
    spans = plan_chunks(300.0, [(149.8, 150.2), (129.0, 130.5)], max_chunk_s=180, parallel=2)
    assert spans == [(0.0, 129.75), (129.75, 300.0)]
