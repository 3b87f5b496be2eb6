"""Speakers on mono recordings: the real CAM++ model on real voices mixed with known turns.

Bounds are set from what was measured here (speaker counts exact; DER measured 0.076 for two
voices, 0.029 for three, 0.000 for one, on the seeds below), with margin for other machines.
"""

from __future__ import annotations

import pytest

from tests.speaker_mixes import build, diarization_error, turns_plan
from vibeinsight.audio.decode import decode_16k
from vibeinsight.diarization import Diarizer

pytestmark = pytest.mark.integration

DER_TWO = 0.15
DER_THREE = 0.12


@pytest.fixture(scope="module")
def mixes(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixes")
    return {"two": build(d, "two", turns_plan(["jfk", "ja"], 10, seed=1)),
            "three": build(d, "three", turns_plan(["jfk", "ja", "left"], 12, seed=1)),
            "one": build(d, "one", turns_plan(["jfk"], 4, seed=1))}


def diarize(mix, block_s: float | None = None, **kw):
    samples = decode_16k(mix.path)
    d = Diarizer(threads=1, **kw)
    step = int((block_s or len(samples) / 16000 + 1) * 16000)
    for i in range(0, len(samples), step):  # blocks as the flow's chunks give them
        d.add(samples[i:i + step], i / 16000)
    return d.finish()


@pytest.mark.parametrize("name, voices, bound", [("two", 2, DER_TWO), ("three", 3, DER_THREE)])
def test_voices_are_found_with_a_low_error(mixes, name, voices, bound):
    mix = mixes[name]
    result = diarize(mix)
    der = diarization_error(mix.reference, result.turns, mix.duration_s)
    print(f"{name}: {result.speakers} speakers, DER {der:.3f}, {result.windows} windows")
    assert result.speakers == voices
    assert der <= bound
    assert [t.speaker for t in result.turns][0] == "S1"
    assert all(a.end <= b.start for a, b in zip(result.turns, result.turns[1:], strict=False))


def test_a_single_voice_stays_one_speaker(mixes, audio):
    assert diarize(mixes["one"]).speakers == 1
    for name in ("jfk.flac", "ja_meeting.flac"):
        samples = decode_16k(audio / name)
        d = Diarizer(threads=1)
        d.add(samples, 0.0)
        assert d.finish().speakers == 1, name


def test_blocks_give_the_same_speakers_as_one_pass(mixes):
    mix = mixes["three"]
    result = diarize(mix, block_s=12.0)  # the recording in chunks, as the flow passes it
    assert result.speakers == 3
    assert diarization_error(mix.reference, result.turns, mix.duration_s) <= DER_THREE + 0.05


def test_the_caller_can_fix_or_cap_the_number_of_speakers(mixes):
    assert diarize(mixes["three"], num_speakers=2).speakers == 2
    assert diarize(mixes["three"], max_speakers=2).speakers == 2
    assert diarize(mixes["two"], max_speakers=5).speakers == 2  # a cap is not a target
