"""Real process-audio runs booked to the provider that bills each byte: a local file (nobody), the
S3 primary standing in for Tigris (SeaweedFS, real signatures) on a "Fly Machine" in nrt, and the
fallback standing in for Supabase Storage; OpenAI and Gemini are HTTP stand-ins called by the real
SDKs. Then the guard lets a run through after 334 Tigris sessions of 15 MB on Free."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone

import pytest

from tests.conftest import sha256
from tests.fake_gemini import FakeGemini
from tests.fake_openai import FakeOpenAI
from tests.quota_helpers import MB, download
from tests.s3_server import free_port
from tests.uploads import as_upload

pytestmark = pytest.mark.integration


@pytest.fixture()
def apis(home, monkeypatch, prefect_harness):
    with FakeOpenAI() as oa, FakeGemini() as gm:
        env = dict(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=oa.url + "/v1", GEMINI_API_KEY="g-test",
                   GOOGLE_GEMINI_BASE_URL=gm.url, VIBEINSIGHT_QUOTA_PLAN="free",
                   VIBEINSIGHT_API_CONCURRENCY_LIMIT=f"openai-{uuid.uuid4().hex[:8]}")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        from vibeinsight.settings import get_settings

        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


def _reset_settings():
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()


def _rows(session_id: str) -> dict:
    from blocks import registry
    from vibeinsight.quota import current_month, month_bounds

    start, end, _ = month_bounds(current_month())
    frame = registry.usage_ledger().events(start, end)
    mine = frame[frame["session_id"] == session_id]
    return {(r.kind, r.provider): r for r in mine.itertuples()}


def _report():
    from flows.quota_report import build_report
    from vibeinsight.quota import current_month
    from vibeinsight.settings import get_settings

    return build_report(get_settings(), "free", current_month())[0]


USER = str(uuid.uuid4())  # uploads in object storage live under uploads/<user_id>/


def _run(source: str, user_id: str | None = None):
    from flows.process_audio import process_audio

    sid = str(uuid.uuid4())
    state = process_audio(source=source, session_id=sid, user_id=user_id, language="en", return_state=True)
    assert state.is_completed(), state.message
    return sid, state.result()


def test_a_local_run_bills_only_the_apis(apis, audio, tmp_path):
    upload = tmp_path / "jfk.flac"
    shutil.copy(audio / "jfk.flac", upload)
    sid, doc = _run(as_upload(upload))  # local storage reads only its uploads folder
    rows = _rows(sid)
    assert set(rows) == {("storage_download", "local"), ("storage_upload", "local"), ("api_call", "openai"),
                         ("api_call", "gemini"), ("status_write", "local")}  # SQLite status store: not Supabase
    assert rows["storage_download", "local"].bytes == upload.stat().st_size
    assert rows["api_call", "openai"].audio_seconds == pytest.approx(doc["usage"]["audio_minutes_billed"] * 60, abs=0.01)
    s = _report()
    assert s["egress_bytes"] == 0 and set(s["cost_by_provider"]) == {"openai", "gemini"}
    assert s["per_session"]["cost_usd_total"] == pytest.approx(doc["usage"]["cost_usd"], abs=1e-5)


def test_a_tigris_run_on_fly_then_334_tigris_sessions_are_not_refused(apis, audio, s3_server, monkeypatch):
    store = s3_server.bucket("vibeinsight-audio")
    for k, v in {**s3_server.env(), "FLY_REGION": "nrt"}.items():
        monkeypatch.setenv(k, v)
    _reset_settings()
    store.upload_file(audio / "jfk.flac", f"uploads/{USER}/jfk.flac", "audio/flac")
    size = (audio / "jfk.flac").stat().st_size
    sid, doc = _run(f"s3://vibeinsight-audio/uploads/{USER}/jfk.flac", USER)
    rows = _rows(sid)
    assert set(rows) == {("storage_download", "tigris"), ("storage_upload", "tigris"), ("storage_held", "tigris"),
                         ("api_call", "openai"), ("api_call", "gemini"), ("status_write", "local"), ("transfer_out", "fly")}
    stored = store.client().head_object(Bucket="vibeinsight-audio", Key=f"results/{sid}.json")["ContentLength"]
    assert rows["storage_upload", "tigris"].bytes == doc["usage"]["bytes_out"] == stored
    assert rows["storage_held", "tigris"].bytes == size + stored
    sent = doc["usage"]["bytes_sent"]["openai"] + doc["usage"]["bytes_sent"]["gemini"]
    out = rows["transfer_out", "fly"]
    assert out.bytes == sent > 0 and out.cost_usd == pytest.approx(sent / 1e9 * 0.04, abs=1e-8)
    s = _report()
    assert s["egress_bytes"] == 0  # reading the upload from Tigris is nobody's egress
    tg = s["providers"]["tigris"]["usage"]
    assert (tg["class_a_requests"], tg["class_b_requests"], tg["bytes_read"]) == (1, 1, size)

    # The design's 333 sessions: 334 uploads of 15 MB from Tigris this month, and the next run still goes.
    from blocks import registry
    from vibeinsight.quota import current_month

    now = datetime.now(timezone.utc)
    registry.usage_ledger().record([download(current_month(now), now.day, 15 * MB, service="tigris") | {"at": now}
                                    for _ in range(334)])
    sid, doc = _run(f"s3://vibeinsight-audio/uploads/{USER}/jfk.flac", USER)
    assert doc["transcode"]["bitrate_kbps"] == 24  # not even compact: Supabase billed none of those bytes
    assert _report()["guard"]["mode"] == "normal"


def test_a_fallback_run_is_booked_to_supabase(apis, audio, s3_server, monkeypatch, tmp_path):
    from blocks.registry import BLOCK_NAME
    from blocks.storage import FallbackStorage, S3Bucket

    fb = s3_server.bucket("fallback-audio", served_as="fallback", service="supabase")
    fb.upload_file(audio / "jfk.flac", f"uploads/{USER}/fb.flac", "audio/flac")
    before = sha256(audio / "jfk.flac")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the primary (Tigris) is down
    monkeypatch.setenv("FLY_S3_ENDPOINT", dead)
    monkeypatch.setenv("VIBEINSIGHT_FALLBACK_S3_ENDPOINT", s3_server.endpoint)
    _reset_settings()
    # Supabase Storage's S3 endpoint is https://<ref>.supabase.co/storage/v1/s3: here SeaweedFS stands in,
    # so the saved block says which service it is (as `vibeinsight blocks save` would for Supabase).
    FallbackStorage(primary=S3Bucket(endpoint=dead, bucket_name="fallback-audio", access_key_id="x",
                                     secret_access_key="y", addressing_style="path", max_attempts=1),
                    fallback=fb).save(BLOCK_NAME, overwrite=True)
    try:
        sid, doc = _run(f"uploads/{USER}/fb.flac", USER)
    finally:
        FallbackStorage.delete(BLOCK_NAME)
    assert doc["usage"]["storage"] == "fallback"
    rows = _rows(sid)
    assert {k for k in rows if k[0].startswith("storage")} == {
        ("storage_download", "supabase"), ("storage_upload", "supabase"), ("storage_held", "supabase")}
    size = (audio / "jfk.flac").stat().st_size
    s = _report()
    assert s["egress_bytes"] == size and s["egress_by_kind"] == {"storage_download": size}
    assert s["providers"]["tigris"]["usage"]["bytes_read"] == 0
    assert sha256(audio / "jfk.flac") == before
