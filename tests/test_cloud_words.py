"""OpenAITranscriber (schema 1.1): word timings from verbose_json and the vocabulary as the prompt,
through the real SDK against the fake of the documented HTTP API."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import SecretStr

from blocks.transcriber import ChunkJob, OpenAITranscriber
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chunk(tmp_path_factory, audio):
    out = tmp_path_factory.mktemp("chunk") / "chunk-0000.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(audio / "jfk.flac"), "-ac", "1", "-ar", "16000",
                    "-c:a", "libopus", "-b:a", "24k", str(out)], check=True)
    return out


def test_words_are_absolute_and_inside_their_segment_and_vocabulary_is_the_prompt(chunk):
    with FakeOpenAI(script=["ask not what your country can do for you"], language="en") as fake:
        t = OpenAITranscriber(api_key=SecretStr("sk-test"), base_url=fake.url + "/v1", prompt="A support call.")
        out = t.transcribe(ChunkJob(index=1, path=chunk, offset=300.0, duration=11.0,
                                    vocabulary=["ComfyUI", "Tigris"]), None)
        form = fake.requests[0]["form"]
    assert form["prompt"] == "ComfyUI, Tigris A support call."
    assert form["timestamp_granularities[]"] == ["segment", "word"]
    words = [w for s in out.segments for w in s.words]
    assert [w.word for w in words] == "ask not what your country can do for you".split()
    for s in out.segments:
        assert s.language == "en"
        assert all(s.start <= w.start < s.end and w.probability is None for w in s.words)
    assert 300.0 <= words[0].start and words[-1].end <= 311.0


def test_without_vocabulary_the_prompt_setting_alone_is_sent(chunk):
    with FakeOpenAI(language="en") as fake:
        t = OpenAITranscriber(api_key=SecretStr("sk-test"), base_url=fake.url + "/v1")
        t.transcribe(ChunkJob(index=0, path=chunk, offset=0.0, duration=11.0), "en")
        assert "prompt" not in fake.requests[0]["form"]
