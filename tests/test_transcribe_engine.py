"""The local engine (faster-whisper's BatchedInferencePipeline on the bundled base model) on real audio:
vocabulary, word timings, per-window languages."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.transcriber import ChunkJob, LocalWhisper
from tests.conftest import ffmpeg

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def whisper(model_cache) -> LocalWhisper:
    return LocalWhisper(model_cache=str(model_cache))


def job(path: Path, offset: float = 0.0, **kw) -> ChunkJob:
    from vibeinsight.audio.decode import decode_16k

    return ChunkJob(index=0, path=path, offset=offset, duration=len(decode_16k(path)) / 16000, **kw)


def test_vocabulary_makes_the_product_name_come_out_right(whisper, audio):
    plain = whisper.transcribe(job(audio / "hotwords.mp3"), None)
    hinted = whisper.transcribe(job(audio / "hotwords.mp3", vocabulary=["ComfyUI", "Tigris"]), None)
    text = " ".join(s.text for s in hinted.segments)
    print("without:", " ".join(s.text for s in plain.segments), "| with:", text)
    assert "ComfyUI" in text
    assert "ComfyUI" not in " ".join(s.text for s in plain.segments)  # the hint is what made the difference
    assert whisper.transcribe_options(None, ["ComfyUI", "Tigris", "ComfyUI"])["hotwords"] == "ComfyUI, Tigris"


def test_words_carry_absolute_times_inside_their_segment(whisper, audio):
    out = whisper.transcribe(job(audio / "jfk.flac", offset=120.0), "en")
    words = [w for s in out.segments for w in s.words]
    assert len(words) >= 20
    for s in out.segments:
        assert s.language == "en" and s.words
        assert all(s.start - 0.01 <= w.start <= w.end <= s.end + 0.01 for w in s.words)
        assert all(0 <= w.probability <= 1 for w in s.words)
    assert 120.0 <= words[0].start < 122.0 and words[-1].end <= 120.0 + 11.1
    assert "country" in "".join(w.word for w in words).lower()


def test_turns_of_different_speakers_are_decoded_each_in_its_own_language(whisper, audio, tmp_path):
    mixed = tmp_path / "ja-then-en.wav"
    ffmpeg("-i", str(audio / "ja_meeting.flac"), "-i", str(audio / "jfk.flac"), "-filter_complex",
           "[0:a]aresample=16000,aformat=channel_layouts=mono,apad=pad_dur=0.6[a];"
           "[1:a]aresample=16000,aformat=channel_layouts=mono[b];[a][b]concat=n=2:v=0:a=1[out]",
           "-map", "[out]", str(mixed))
    # The speaker turns (from diarization in the flow) keep the two parts out of one 30 s window.
    turns = [(0.0, 10.6, "S1"), (11.2, 22.0, "S2")]
    out = whisper.transcribe(job(mixed, turns=turns), None)
    for s in out.segments:
        print(s.start, s.end, s.language, s.text)
    ja = [s for s in out.segments if s.end <= 11.2]
    en = [s for s in out.segments if s.start >= 11.0]
    assert ja and en
    assert all(s.language == "ja" for s in ja) and all(s.language == "en" for s in en)
    assert "country" in " ".join(s.text for s in en).lower()
    assert any("\u3040" <= c <= "\u30ff" for c in "".join(s.text for s in ja))
