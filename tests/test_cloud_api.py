"""OpenAITranscriber and GeminiAnalyzer: the real SDKs calling fakes of the HTTP APIs on 127.0.0.1
(the OpenAI fake probes each upload with ffprobe, as the real service decodes it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.analyzer import AnalysisFailed, GeminiAnalyzer
from blocks.transcriber import ChunkJob, OpenAITranscriber
from tests.fake_gemini import INSIGHT, FakeGemini, quota_exhausted
from tests.fake_openai import FakeOpenAI, error, rate_limited
from vibeinsight.errors import TranscriptionFailed
from vibeinsight.schemas import Segment, Transcript

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chunk(tmp_path_factory, audio) -> Path:
    """A compact chunk as the transcode stage makes it: 16 kHz mono Opus at 24 kb/s."""
    out = tmp_path_factory.mktemp("chunk") / "chunk-0000.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(audio / "ja_meeting.flac"), "-ac", "1", "-ar", "16000",
                    "-c:a", "libopus", "-b:a", "24k", "-application", "voip", str(out)], check=True)
    return out


@pytest.fixture()
def openai_fake():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture()
def gemini_fake():
    with FakeGemini() as fake:
        yield fake


def whisper(fake, **kw) -> OpenAITranscriber:
    return OpenAITranscriber(api_key=SecretStr("sk-test"), base_url=fake.url + "/v1", **kw)


def test_whisper1_sends_the_compact_chunk_and_makes_timestamps_absolute(openai_fake, chunk):
    job = ChunkJob(index=3, path=chunk, offset=600.0, duration=10.6, speaker="left")
    out = whisper(openai_fake).transcribe(job, "ja")
    (req,) = openai_fake.requests
    form = req["form"]
    assert req["path"] == "/v1/audio/transcriptions" and req["headers"]["authorization"] == "Bearer sk-test"
    assert form["model"] == "whisper-1" and form["response_format"] == "verbose_json" and form["language"] == "ja"
    assert form["timestamp_granularities[]"] == ["segment", "word"]
    assert form["file"]["data"] == chunk.read_bytes() and form["file"]["filename"] == "chunk-0000.ogg"
    assert req["audio"]["codec"] == "opus" and len(form["file"]["data"]) < 25 * 1024**2
    assert out.language == "ja"  # verbose_json says "japanese"
    assert [s.start for s in out.segments][0] == 600.0 and out.segments[-1].end <= 600.0 + 10.6 + 0.01
    assert all(s.speaker == "left" for s in out.segments)
    assert out.segments[0].confidence == pytest.approx(0.7711, abs=1e-3)  # exp(-0.25) * (1 - 0.01)
    assert "".join(s.text for s in out.segments) == openai_fake.script[0]
    assert out.usage.calls == 1 and out.usage.bytes_sent == chunk.stat().st_size
    assert out.usage.audio_seconds == pytest.approx(round(req["audio"]["duration"]))  # usage.seconds as billed


def test_gpt4o_transcribe_asks_json_with_logprobs(openai_fake, chunk):
    job = ChunkJob(index=0, path=chunk, offset=30.0, duration=10.6)
    out = whisper(openai_fake, model="gpt-4o-mini-transcribe").transcribe(job, None)
    form = openai_fake.requests[0]["form"]
    assert form["response_format"] == "json" and form["include[]"] == ["logprobs"] and "language" not in form
    assert "timestamp_granularities[]" not in form  # only whisper-1 supports it
    (seg,) = out.segments
    assert (seg.start, seg.end) == (30.0, 40.6) and seg.confidence == pytest.approx(0.9048, abs=1e-3)
    assert out.usage.tokens == {"openai_input": 140, "openai_output": 20}
    assert out.language == "und"


def test_429_is_retried_honoring_retry_after_and_counted(openai_fake, chunk):
    openai_fake.plan = [rate_limited("2"), (503, {}, error("The server is overloaded", "server_error"))]
    out = whisper(openai_fake).transcribe(ChunkJob(index=0, path=chunk, offset=0, duration=10.6), "ja")
    assert len(openai_fake.requests) == 3 and out.usage.calls == 3 and out.usage.retries == 2
    # the header read off the SDK's response: 2 s between the 429 and the next try (the fallback
    # back-off of a first retry is at most 0.5 s, so ignoring the header shows here)
    first, second, _ = (r["at"] for r in openai_fake.requests)
    assert second - first >= 2.0
    assert out.usage.bytes_sent == 3 * chunk.stat().st_size  # each attempt sent the file again
    assert out.segments


def test_400_invalid_file_fails_fast_with_a_code(openai_fake, tmp_path):
    bad = tmp_path / "chunk.ogg"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(TranscriptionFailed) as e:
        whisper(openai_fake).transcribe(ChunkJob(index=0, path=bad, offset=0, duration=1), None)
    assert e.value.code == "api_invalid_request" and "Invalid file format" in e.value.message
    assert len(openai_fake.requests) == 1  # not retried


def test_401_and_insufficient_quota_fail_fast(openai_fake, chunk):
    job = ChunkJob(index=0, path=chunk, offset=0, duration=10.6)
    openai_fake.plan = [(401, {}, error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))]
    with pytest.raises(TranscriptionFailed) as e:
        whisper(openai_fake).transcribe(job, None)
    assert e.value.code == "api_auth"
    openai_fake.plan = [(429, {}, error("You exceeded your current quota", "insufficient_quota", "insufficient_quota"))]
    with pytest.raises(TranscriptionFailed) as e:
        whisper(openai_fake).transcribe(job, None)
    assert e.value.code == "api_quota_exhausted" and len(openai_fake.requests) == 2


def test_rate_limit_that_never_clears_ends_with_a_code(openai_fake, chunk):
    openai_fake.plan = [rate_limited("0")] * 3  # the wait is measured above; here only the tries count
    with pytest.raises(TranscriptionFailed) as e:
        whisper(openai_fake, attempts=3).transcribe(ChunkJob(index=0, path=chunk, offset=0, duration=10.6), None)
    assert e.value.code == "api_rate_limited" and len(openai_fake.requests) == 3


def test_openai_base_url_from_the_sdk_environment(openai_fake, chunk, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    OpenAITranscriber().transcribe(ChunkJob(index=0, path=chunk, offset=0, duration=10.6), None)
    assert openai_fake.requests[0]["headers"]["authorization"] == "Bearer sk-env"


def transcript(n: int = 3) -> Transcript:
    segs = [Segment(start=i * 5.0, end=i * 5.0 + 4.0, text=f"本日の会議を始めます。議題{i}です。", confidence=0.9,
                    speaker="left" if i % 2 else None) for i in range(n)]
    return Transcript(language="ja", model="openai/whisper-1", text="".join(s.text for s in segs), segments=segs)


def gemini(fake, **kw) -> GeminiAnalyzer:
    return GeminiAnalyzer(api_key=SecretStr("g-test"), base_url=fake.url, **kw)


def test_gemini_structured_output_beside_local_metrics(gemini_fake):
    doc, usage = gemini(gemini_fake).analyze_metered(transcript(), 15.0)
    count, gen = gemini_fake.requests
    assert count["path"] == "/v1beta/models/gemini-2.5-flash:countTokens"
    assert gen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert gen["headers"]["x-goog-api-key"] == "g-test"
    cfg = gen["json"]["generationConfig"]
    assert cfg["responseMimeType"] == "application/json"
    schema = cfg["responseSchema"]
    assert set(schema["required"]) >= {"summary", "sentiment", "vibe", "topics", "action_items", "key_quotes"}
    assert schema["properties"]["sentiment"]["properties"]["label"]["enum"] == ["positive", "neutral", "negative",
                                                                                "mixed"]
    assert "[5.0] left: 本日の会議を始めます。議題1です。" in gemini_fake.prompt_text(gen)
    assert "system_instruction" in gen["json"] or "systemInstruction" in gen["json"]
    assert doc["summary"] == INSIGHT["summary"] and doc["sentiment"] == {"label": "positive", "score": 0.6}
    assert doc["vibe"] and doc["key_quotes"][0]["start"] == 0.0
    assert doc["speech_ratio"] > 0 and "top_terms" in doc  # the local metrics stay
    assert doc["engine"] == "gemini/gemini-2.5-flash+local-metrics"
    prompt_tokens = int(len(gemini_fake.prompt_text(gen)) * 0.5)
    assert usage.calls == 2 and usage.tokens["gemini_input"] == prompt_tokens
    assert usage.tokens["gemini_output"] == len(json.dumps(INSIGHT, ensure_ascii=False)) // 3


def test_gemini_invalid_json_is_retried_once(gemini_fake):
    gemini_fake.outputs = ['{"summary": "half'] * 1
    doc, usage = gemini(gemini_fake).analyze_metered(transcript(), 15.0)
    assert doc["summary"] == INSIGHT["summary"] and usage.retries == 1 and len(gemini_fake.requests) == 3
    gemini_fake.outputs = ['{"summary": 1}', "not json"]
    with pytest.raises(AnalysisFailed) as e:
        gemini(gemini_fake).analyze(transcript(), 15.0)
    assert e.value.code == "analysis_invalid_output"


def test_gemini_429_retried_with_retry_info(gemini_fake):
    gemini_fake.plan = [quota_exhausted("2s"), (500, {}, {"error": {"code": 500, "message": "internal",
                                                                  "status": "INTERNAL"}})]
    doc, usage = gemini(gemini_fake).analyze_metered(transcript(), 15.0)
    assert usage.retries == 2 and usage.calls == 4 and doc["topics"] == INSIGHT["topics"]
    # RetryInfo's retryDelay, read from the error body (no Retry-After header): 2 s before the next try
    # (a first fallback back-off is at most 0.5 s)
    first, second = (r["at"] for r in gemini_fake.requests[:2])
    assert second - first >= 2.0


def test_gemini_long_transcript_is_split_and_merged(gemini_fake):
    t = transcript(40)
    doc, usage = gemini(gemini_fake, max_input_tokens=300).analyze_metered(t, 200.0)
    gens = [r for r in gemini_fake.requests if r["path"].endswith(":generateContent")]
    parts = doc["llm"]["parts"]
    assert parts >= 2 and len(gens) == parts + 1  # each part, then one merge
    sent = [gemini_fake.prompt_text(r) for r in gens[:-1]]
    assert all(int(len(s) * 0.5) <= 300 for s in sent)  # every part within the limit
    assert "".join(sent).count("議題") == 40  # no line lost or repeated
    assert "Part 2:" in gemini_fake.prompt_text(gens[-1])


def test_gemini_auth_error_fails_fast(gemini_fake):
    gemini_fake.plan = [(400, {}, {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                                             "status": "INVALID_ARGUMENT"}})]
    with pytest.raises(AnalysisFailed) as e:
        gemini(gemini_fake).analyze(transcript(), 15.0)
    assert e.value.code == "api_invalid_request" and len(gemini_fake.requests) == 1


def test_gemini_base_url_from_env(gemini_fake, monkeypatch):
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini_fake.url)
    monkeypatch.setenv("GEMINI_API_KEY", "g-env")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    GeminiAnalyzer().analyze(transcript(), 15.0)
    assert gemini_fake.requests[0]["headers"]["x-goog-api-key"] == "g-env"
