"""When a share's speaker embeddings run (flows/transcribe_part.transcribe_share): beside the chunks when
the transcriber waits on an API, after them when the local engine keeps the cores busy itself."""

from __future__ import annotations

import threading
import uuid

import pytest

from blocks.transcriber import LocalWhisper, OpenAITranscriber
from flows import transcribe_part
from vibeinsight.fanout import PartRequest, SpeakerWindows, run_prefix
from vibeinsight.settings import Settings

pytestmark = pytest.mark.unit

SID, PARENT = str(uuid.uuid4()), str(uuid.uuid4())


def _request() -> PartRequest:
    return PartRequest(session_id=SID, parent_run_id=PARENT, part=1, content_id="a" * 64, language="ja", diarize=True,
                       chunks=[dict(index=i, key=f"{run_prefix(SID, PARENT)}{i:05d}-mix.ogg", offset=60.0 * i,
                                    duration=60.0) for i in range(3)])


def _embedding_seen_during_chunks(monkeypatch, tmp_path, transcriber) -> bool:
    """Whether the embeddings had started while the chunks were being transcribed (no timing: the
    stand-in chunk run waits for the embeddings to start, up to a bound, and says whether they did)."""
    started = threading.Event()
    seen: list[bool] = []

    def embed(req, paths, settings):
        started.set()
        return SpeakerWindows(spans=[], centres=[], embeddings="")

    def chunks(jobs, *args, **kwargs):
        # beside: the embeddings start at once; after: they cannot start before this returns
        seen.append(started.wait(timeout=10 if transcriber.api_service() else 0.2))
        return []

    monkeypatch.setattr(transcribe_part, "_embed", embed)
    monkeypatch.setattr(transcribe_part, "run_chunks", chunks)
    monkeypatch.setattr(transcribe_part, "current_flow_run_id", lambda: str(uuid.uuid4()))
    req = _request()
    result = transcribe_part.transcribe_share(req, {c.index: tmp_path / f"{c.index}.ogg" for c in req.chunks}, Settings(), storage=None,
                                              usage=[], transcriber=transcriber)
    assert started.is_set() and result.windows is not None  # computed either way
    return seen == [True]


def test_an_api_share_embeds_its_speakers_while_the_requests_wait(monkeypatch, tmp_path):
    assert _embedding_seen_during_chunks(monkeypatch, tmp_path, OpenAITranscriber(api_key="sk-test"))


def test_a_local_share_embeds_its_speakers_after_its_chunks(monkeypatch, tmp_path):
    assert not _embedding_seen_during_chunks(monkeypatch, tmp_path, LocalWhisper())
