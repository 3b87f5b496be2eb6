"""process-audio on mono recordings: diarized speakers, per-segment languages, word timings, vocabulary
(schema 1.1), through Prefect's test harness with the real models."""

from __future__ import annotations

import pytest

from tests.conftest import ffmpeg, sha256
from tests.operator_log import messages, operator_log
from tests.uploads import as_upload
from vibeinsight.schemas import ResultDocument, Status

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def run(source, **params):
    from flows.process_audio import process_audio

    return process_audio(source=as_upload(source), return_state=True, **params)


@pytest.fixture(scope="module")
def ja_then_en(tmp_path_factory, audio):
    """A Japanese speaker, then an English one, 0.6 s apart, in one mono file."""
    out = tmp_path_factory.mktemp("mono") / "ja-then-en.flac"
    ffmpeg("-i", str(audio / "ja_meeting.flac"), "-i", str(audio / "jfk.flac"), "-filter_complex",
           "[0:a]aresample=16000,aformat=channel_layouts=mono,apad=pad_dur=0.6[a];"
           "[1:a]aresample=16000,aformat=channel_layouts=mono[b];[a][b]concat=n=2:v=0:a=1[out]",
           "-map", "[out]", str(out))
    return out


def test_mono_recording_gets_speakers_languages_and_words(home, ja_then_en):
    state = run(ja_then_en, vocabulary=["Supabase", "ComfyUI"])
    assert state.is_completed(), state.message
    doc = ResultDocument.model_validate(state.result())
    t = doc.transcript
    for s in t.segments:
        print(s.start, s.end, s.speaker, s.language, s.text)
    assert doc.schema_version == "1.3" and doc.status is Status.COMPLETED
    assert t.diarization.method == "embeddings" and t.diarization.speakers == 2
    assert t.vocabulary == ["Supabase", "ComfyUI"]
    first, second = [s for s in t.segments if s.end <= 11.3], [s for s in t.segments if s.start >= 11.0]
    assert first and second
    assert {s.speaker for s in first} == {"S1"} and {s.speaker for s in second} == {"S2"}
    assert {s.language for s in first} == {"ja"} and {s.language for s in second} == {"en"}
    assert set(t.languages) == {"ja", "en"} and sum(t.languages.values()) == pytest.approx(1.0, abs=1e-3)
    assert "country" in t.text.lower()
    for s in t.segments:
        assert s.words and all(s.start - 0.01 <= w.start <= w.end <= s.end + 0.01 for w in s.words)
    speakers = doc.analysis["speakers"]
    assert set(speakers) == {"S1", "S2"} and all(v["turns"] == 1 for v in speakers.values())
    assert doc.analysis["timing_basis"] == "words"
    assert doc.timings["diarize"] > 0


def test_diarization_off_leaves_speakers_out(home, audio, monkeypatch):
    monkeypatch.setenv("VIBEINSIGHT_DIARIZE", "off")
    state = run(audio / "jfk.flac", language="en")
    assert state.is_completed(), state.message
    doc = ResultDocument.model_validate(state.result())
    assert doc.transcript.diarization is None and all(s.speaker is None for s in doc.transcript.segments)
    assert doc.analysis["speakers"] == {} and "diarize" not in doc.timings


def test_impossible_speaker_counts_are_rejected_and_the_upload_kept(home, audio):
    src = audio / "jfk.flac"
    before = sha256(src)
    with operator_log() as lines:
        state = run(src, speakers=3, max_speakers=2)
    assert state.is_failed()
    doc = ResultDocument.model_validate_json((home / "bucket" / "results").glob("*.json").__next__().read_text())
    assert doc.status is Status.FAILED and doc.error.code == "invalid_parameter"
    assert "max_speakers" in messages(lines)  # what exactly was wrong: for operators, in the log
    assert sha256(src) == before
