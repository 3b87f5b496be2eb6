"""State that outlives a Machine: the chunk cache's Prefect results in the bucket (SeaweedFS, real
signatures), so a re-run of a session on a fresh disk makes no new transcription calls."""

from __future__ import annotations

import uuid

import pytest

from tests.fake_openai import FakeOpenAI
from tests.fly_s3 import seaweed_s3

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    with seaweed_s3(tmp_path_factory.mktemp("seaweed")) as s3:
        yield s3


def test_a_rerun_on_a_fresh_disk_reuses_the_chunks_in_the_bucket(bucket, tmp_path, monkeypatch, prefect_harness):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.process_audio import process_audio
    from vibeinsight.settings import get_settings

    uid, sid = str(uuid.uuid4()), str(uuid.uuid4())
    bucket.block().upload_file(DATA / "jfk.flac", f"uploads/{uid}/jfk.flac", "audio/flac")
    with FakeOpenAI(script=["And so my fellow Americans"], language="en") as oa:
        for k, v in {**bucket.env(), "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": oa.url + "/v1",
                     "VIBEINSIGHT_OPENAI_CHUNK_S": "60",
                     "VIBEINSIGHT_API_CONCURRENCY_LIMIT": f"openai-{uuid.uuid4().hex[:8]}"}.items():
            monkeypatch.setenv(k, v)
        calls = []
        for attempt in ("first", "rerun"):  # each on an empty disk, as on a new Machine
            monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path / attempt / "home"))
            get_settings.cache_clear()
            with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / attempt / "prefect-storage"}):
                state = process_audio(source=f"s3://vibeinsight-audio/uploads/{uid}/jfk.flac", session_id=sid,
                                      user_id=uid, language="en", return_state=True)
            assert state.is_completed(), state.message
            calls.append(len(oa.requests))
            doc = state.result()
        get_settings.cache_clear()
    assert calls[0] >= 1 and calls[1] == calls[0]  # the re-run called nobody
    assert doc["usage"]["api_calls"].get("openai", 0) == 0
    assert "Americans" in doc["transcript"]["text"]  # the cached transcript, from the bucket
    assert [k for k in bucket.keys("prefect-results/") if k.startswith("prefect-results/chunk-")]
    assert not (tmp_path / "rerun" / "prefect-storage").exists() or not any((tmp_path / "rerun" / "prefect-storage").iterdir())


def test_runs_starting_together_share_one_result_storage_document(bucket, monkeypatch, prefect_harness):
    """The first runs on a server race to save the document: every one of them gets it."""
    import uuid as _uuid
    from concurrent.futures import ThreadPoolExecutor

    from blocks import registry

    monkeypatch.setattr(registry, "BLOCK_NAME", f"race-{_uuid.uuid4().hex[:8]}")
    store = bucket.block()
    with ThreadPoolExecutor(8) as pool:
        blocks = list(pool.map(lambda _: registry.result_storage(store), range(8)))
    assert len({b._block_document_id for b in blocks}) == 1 and all(b._store is store for b in blocks)
