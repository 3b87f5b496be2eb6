"""process-audio on the cloud backends: S3 (SeaweedFS over HTTP, signatures checked), OpenAI and
Gemini (fakes at the HTTP layer, real SDKs), under a real Prefect API (prefect_test_harness)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.fake_gemini import FakeGemini
from tests.fake_openai import FakeOpenAI, rate_limited
from tests.s3_server import free_port

pytestmark = pytest.mark.integration
U1 = "7a1e0c1e-1b2c-4d3e-8f40-5a6b7c8d9e01"  # the uploading user: a run reads only uploads/<user_id>/…


@pytest.fixture(scope="module")
def recording(tmp_path_factory, audio):
    """~2.5 minutes of Japanese speech with pauses: several 60 s chunks."""
    d = tmp_path_factory.mktemp("rec")
    out = d / "meeting.wav"
    src = str(audio / "ja_meeting.flac")
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "13", "-i", src, "-af", "apad=pad_dur=0", "-ac", "1",
                    str(out)], check=True)
    return out


@pytest.fixture()
def cloud(home, monkeypatch, s3_server, prefect_harness):
    store = s3_server.bucket("vibeinsight-audio")
    with FakeOpenAI() as oa, FakeGemini() as gm:
        env = dict(**s3_server.env(), OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=oa.url + "/v1",
                   GEMINI_API_KEY="g-test", GOOGLE_GEMINI_BASE_URL=gm.url, VIBEINSIGHT_OPENAI_CHUNK_S="60",
                   VIBEINSIGHT_OPENAI_CONCURRENCY="4", VIBEINSIGHT_API_CONCURRENCY_LIMIT=f"openai-{uuid.uuid4().hex[:8]}",
                   # speakers are not under test here (test_flow_speakers, the fan-out e2e): their embeddings
                   # of 2.5 minutes, three runs a test, were a third of this module's CPU
                   VIBEINSIGHT_DIARIZE="off")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        from vibeinsight.settings import get_settings

        get_settings.cache_clear()
        yield store, oa, gm
        get_settings.cache_clear()


def run_flow(source: str, session_id: str):
    from flows.process_audio import process_audio

    return process_audio(source=source, session_id=session_id, user_id=U1, language="ja", return_state=True)


def test_cloud_run_end_to_end_with_usage_and_cache(cloud, recording):
    store, oa, gm = cloud
    store.upload_file(recording, f"uploads/{U1}/meeting.wav", "audio/wav")
    etag = store.client().head_object(Bucket=store.bucket_name, Key=f"uploads/{U1}/meeting.wav")["ETag"]
    sid = str(uuid.uuid4())
    state = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/meeting.wav", sid)
    assert state.is_completed(), state.message
    doc = state.result()
    chunks = doc["transcode"]["chunks"]
    assert len(chunks) >= 3 and all(c["end"] - c["start"] <= 60.01 for c in chunks)

    # what was sent: one compact Opus chunk per request, never the raw upload
    assert len(oa.requests) == len(chunks)
    sent = [r["form"]["file"]["data"] for r in oa.requests]
    assert all(r["audio"]["codec"] == "opus" for r in oa.requests)
    assert sum(map(len, sent)) == sum(c["bytes"] for c in chunks) < recording.stat().st_size / 10
    assert {r["form"]["language"] for r in oa.requests} == {"ja"}

    # parsed: absolute timestamps across chunks, in order
    segs = doc["transcript"]["segments"]
    assert doc["transcript"]["model"] == "openai/whisper-1" and doc["transcript"]["language"] == "ja"
    assert segs[-1]["start"] >= chunks[-1]["start"] and [s["start"] for s in segs] == sorted(s["start"] for s in segs)

    a = doc["analysis"]
    assert a["engine"].startswith("gemini/") and a["summary"] and "speech_ratio" in a

    u = doc["usage"]
    assert u["storage"] == "primary" and u["bytes_in"] == recording.stat().st_size
    assert u["api_calls"]["openai"] == len(chunks) and u["api_calls"]["gemini"] == 2
    assert u["bytes_sent"]["openai"] == sum(c["bytes"] for c in chunks)
    assert u["audio_minutes_billed"] == pytest.approx(sum(round(r["audio"]["duration"]) for r in oa.requests) / 60,
                                                      abs=1e-3)
    assert u["tokens"]["gemini_input"] > 0 and u["tokens"]["gemini_output"] > 0
    assert u["cost_by_service"]["openai"] == pytest.approx(u["audio_minutes_billed"] * 0.006, abs=1e-6)
    assert u["cost_usd"] == pytest.approx(sum(u["cost_by_service"].values()), abs=1e-6)
    assert 0 < u["bytes_out"]

    stored = json.loads(store.get_bytes(f"results/{sid}.json"))
    assert stored["status"] == "COMPLETED" and stored["usage"]["api_calls"]["openai"] == len(chunks)
    assert store.client().head_object(Bucket=store.bucket_name, Key=f"uploads/{U1}/meeting.wav")["ETag"] == etag

    # a re-run of the same session reuses every finished chunk: no second transcription bill
    before = len(oa.requests)
    again = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/meeting.wav", sid)
    assert again.is_completed()
    doc2 = again.result()
    assert len(oa.requests) == before
    assert "openai" not in doc2["usage"]["api_calls"] and doc2["transcript"]["segments"] == segs
    # another session transcribes for itself
    assert run_flow(f"s3://vibeinsight-audio/uploads/{U1}/meeting.wav", str(uuid.uuid4())).is_completed()
    assert len(oa.requests) == 2 * before

    # Had the first run died before booking its calls (a Machine lost: no marker of its attempt), the next
    # run of the session books what its cached chunks were billed, once (vibeinsight.paid)
    first = str(state.state_details.flow_run_id)
    prefix = f"prefect-results/fanout/{sid}/booked/"
    markers = [o["Key"] for o in store.client().list_objects_v2(Bucket=store.bucket_name, Prefix=prefix)["Contents"]]
    assert [m for m in markers if m.startswith(prefix + first + ".")], markers  # the first run booked its attempt
    for key in markers:
        store.client().delete_object(Bucket=store.bucket_name, Key=key)
    requests = len(oa.requests)
    third = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/meeting.wav", sid).result()
    assert len(oa.requests) == requests and third["transcript"]["segments"] == segs  # from the cache
    assert third["usage"]["api_calls"]["openai"] == len(chunks)
    assert third["usage"]["cost_by_service"]["openai"] == pytest.approx(u["cost_by_service"]["openai"], abs=1e-9)
    fourth = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/meeting.wav", sid).result()
    assert "openai" not in fourth["usage"]["api_calls"]  # booked by the third run: never twice


def test_prefect_concurrency_limit_caps_api_calls_across_the_pool(cloud, recording):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from vibeinsight.settings import get_settings

    store, oa, gm = cloud
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
            name=get_settings().api_concurrency_limit, limit=1))
    oa.delay_s = 0.5
    oa.plan = [rate_limited("2")]
    store.upload_file(recording, f"uploads/{U1}/limited.wav", "audio/wav")
    state = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/limited.wav", str(uuid.uuid4()))
    assert state.is_completed(), state.message
    doc = state.result()
    assert oa.max_in_flight == 1  # 4 chunk threads, 1 slot
    assert doc["usage"]["retries"]["openai"] == 1
    # the retry waits out Retry-After inside its slot: the next request is the same chunk, arriving no
    # sooner than the 429's answer (delay_s) plus the 2 s it asked for (without the header: at most 0.5 s)
    throttled, retried = oa.requests[:2]
    assert retried["form"]["file"]["data"] == throttled["form"]["file"]["data"]
    assert retried["at"] - throttled["at"] >= oa.delay_s + 2.0
    assert doc["usage"]["api_calls"]["openai"] == len(doc["transcode"]["chunks"]) + 1


def test_fallback_storage_serves_when_primary_is_down(cloud, recording, monkeypatch, s3_server):
    store, oa, gm = cloud
    fb = s3_server.bucket("fallback-audio")
    fb.upload_file(recording, f"uploads/{U1}/fb.wav", "audio/wav")
    monkeypatch.setenv("FLY_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("VIBEINSIGHT_FALLBACK_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("VIBEINSIGHT_FALLBACK_S3_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("VIBEINSIGHT_FALLBACK_S3_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("VIBEINSIGHT_FALLBACK_S3_BUCKET_NAME", "fallback-audio")
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    sid = str(uuid.uuid4())
    state = run_flow(f"uploads/{U1}/fb.wav", sid)
    assert state.is_completed(), state.message
    assert state.result()["usage"]["storage"] == "fallback"
    assert json.loads(fb.get_bytes(f"results/{sid}.json"))["usage"]["storage"] == "fallback"


def test_missing_s3_upload_is_rejected_with_a_code(cloud):
    store, oa, gm = cloud
    sid = str(uuid.uuid4())
    state = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/nope.wav", sid)
    assert state.is_failed()
    doc = json.loads(store.get_bytes(f"results/{sid}.json"))
    assert doc["status"] == "FAILED" and doc["error"]["code"] == "not_found" and not oa.requests


def test_blocks_save_and_load_by_name(prefect_harness):
    from pydantic import SecretStr

    from blocks.analyzer import GeminiAnalyzer
    from blocks.storage import FallbackStorage, S3Bucket
    from blocks.transcriber import OpenAITranscriber

    primary = S3Bucket(endpoint="https://fly.storage.tigris.dev", access_key_id="tid",
                       secret_access_key=SecretStr("tsecret"))
    fallback = S3Bucket(endpoint="https://ref.supabase.co/storage/v1/s3", served_as="fallback",
                        service="supabase", region="ap-northeast-1")
    FallbackStorage(primary=primary, fallback=fallback).save("audio-storage", overwrite=True)
    OpenAITranscriber(model="gpt-4o-transcribe", api_key=SecretStr("sk-x")).save("openai", overwrite=True)
    GeminiAnalyzer(model="gemini-2.5-flash-lite").save("gemini", overwrite=True)
    store = FallbackStorage.load("audio-storage")
    assert store.primary.secret_access_key.get_secret_value() == "tsecret"
    assert store.fallback.service == "supabase" and store.fallback.role() == "fallback"
    t = OpenAITranscriber.load("openai")
    assert t.model == "gpt-4o-transcribe" and t.api_key.get_secret_value() == "sk-x"
    assert GeminiAnalyzer.load("gemini").model == "gemini-2.5-flash-lite"
