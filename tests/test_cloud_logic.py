"""The cloud blocks' plain logic, without a server: retries (Retry-After, back-off, metered calls),
prices, the insight schema, and which block (storage, transcriber, analyzer, status store) the settings pick."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState, Retrying

from tests.fake_gemini import INSIGHT
from vibeinsight.errors import TranscriptionFailed
from vibeinsight.insight import Insight
from vibeinsight.usage import ServiceUsage, cost

pytestmark = pytest.mark.unit


@pytest.fixture()
def retry():
    """vibeinsight.retry, imported by the tests that use it: should it fail to import, those tests
    fail, not the collection of the whole run."""
    import vibeinsight.retry as module

    return module


def _state(attempt: int, exc: BaseException) -> RetryCallState:
    """What tenacity hands a wait strategy after try number `attempt` failed with `exc`."""
    rs = RetryCallState(Retrying(), None, (), {})
    rs.attempt_number = attempt
    rs.set_exception((type(exc), exc, None))
    return rs


def test_parse_retry_after(retry):
    assert retry.parse_retry_after({"Retry-After": "7"}) == 7.0
    assert retry.parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry.parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry.parse_retry_after({"Retry-After": "soon"}) is None
    assert retry.parse_retry_after({}) is None and retry.parse_retry_after(None) is None


def test_wait_honours_retry_after_capped_else_backs_off_exponentially(retry, monkeypatch):
    import random

    monkeypatch.setattr(random, "uniform", lambda lo, hi: hi)  # full jitter at its top: the window itself
    wait = retry.wait_retry_after(retry.backoff(base_s=1, cap_s=8))
    busy = retry.Transient("busy")
    assert [wait(_state(n, busy)) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 8, 8]  # base·2^(n-1), capped
    assert wait(_state(1, retry.Transient("429", retry_after=30.0))) == 30.0  # the server's word wins
    assert wait(_state(1, retry.Transient("429", retry_after=1e6))) == retry.MAX_RETRY_AFTER_S  # within reason
    assert wait(_state(3, retry.Transient("429", retry_after=0.0))) == 0.0
    monkeypatch.setattr(random, "uniform", lambda lo, hi: lo)
    assert wait(_state(3, busy)) == 0  # the jitter's window starts at zero


def test_transient_retrying_sleeps_as_told_and_lets_permanent_errors_through(retry):
    slept, calls, retried = [], [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise retry.Transient("busy", retry_after=2.5 if len(calls) == 1 else None)
        return "ok"

    assert retry.transient_retrying(5, retried.append, sleep=slept.append)(flaky) == "ok"
    assert len(calls) == 3 and len(retried) == 2 and all(isinstance(e, retry.Transient) for e in retried)
    assert slept[0] == 2.5 and 0 <= slept[1] <= 1.0  # Retry-After, then the default back-off's second window

    def permanent():
        calls.append(1)
        raise ValueError("bad")

    calls.clear()
    with pytest.raises(ValueError):
        retry.transient_retrying(5, sleep=slept.append)(permanent)
    assert len(calls) == 1  # not retried
    with pytest.raises(retry.Transient):  # out of tries: the last Transient itself
        retry.transient_retrying(2, sleep=slept.append)(lambda: (_ for _ in ()).throw(retry.Transient("down")))


class SDKError(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


def _classify(exc: Exception) -> Exception:
    """As a block does: 429 and 5xx are worth another try, anything else is final."""
    from vibeinsight import retry

    if isinstance(exc, SDKError) and (exc.status == 429 or exc.status >= 500):
        return retry.Transient(str(exc), retry_after=0.0, status=exc.status)
    return TranscriptionFailed(f"final: {exc}", "api_invalid_request")


def _failing(*statuses: int, result: str = "text"):
    left = list(statuses)

    def call():
        if left:
            raise SDKError(left.pop(0))
        return result

    return call


def test_metered_call_counts_every_call_and_retry(retry):
    usage, slept = ServiceUsage(service="openai", model="whisper-1"), []
    assert retry.metered_call(_failing(429, 503), usage, _classify, 5, TranscriptionFailed, sleep=slept.append) == "text"
    assert (usage.calls, usage.retries) == (3, 2) and slept == [0.0, 0.0]
    assert retry.metered_call(_failing(), usage, _classify, 5, TranscriptionFailed, sleep=slept.append) == "text"
    assert (usage.calls, usage.retries) == (4, 2)  # the counts add up over a run's calls


def test_metered_call_out_of_tries_says_why_and_final_errors_are_not_retried(retry):
    usage = ServiceUsage(service="openai")
    with pytest.raises(TranscriptionFailed) as e:
        retry.metered_call(_failing(429, 429, 429), usage, _classify, 3, TranscriptionFailed, sleep=lambda s: None)
    assert e.value.code == "api_rate_limited" and "after 3 calls" in e.value.message
    assert (usage.calls, usage.retries) == (3, 2)
    usage = ServiceUsage(service="gemini")
    with pytest.raises(TranscriptionFailed) as e:
        retry.metered_call(_failing(500, 502), usage, _classify, 2, TranscriptionFailed, sleep=lambda s: None)
    assert e.value.code == "api_unavailable"
    usage = ServiceUsage(service="openai")
    with pytest.raises(TranscriptionFailed) as e:
        retry.metered_call(_failing(400), usage, _classify, 5, TranscriptionFailed, sleep=lambda s: None)
    assert e.value.code == "api_invalid_request" and (usage.calls, usage.retries) == (1, 0)


def test_insight_schema_and_prices():
    i = Insight.model_validate({**INSIGHT, "sentiment": {"label": "mixed", "score": 3}}).clamped()
    assert i.sentiment.score == 1.0
    assert cost(ServiceUsage(service="openai", model="whisper-1", audio_seconds=600)) == pytest.approx(0.06)
    g = ServiceUsage(service="gemini", model="gemini-2.5-flash", tokens={"gemini_input": 1_000_000,
                                                                        "gemini_output": 100_000})
    assert cost(g) == pytest.approx(0.30 + 0.25)
    # an unknown model is priced at the service's dearest listed price, never free
    assert cost(ServiceUsage(service="openai", model="whisper-9", audio_seconds=60)) == pytest.approx(0.006)


def test_registry_picks_cloud_blocks_from_the_environment(monkeypatch, tmp_path):
    from blocks import registry
    from blocks.analyzer import GeminiAnalyzer, LocalAnalyzer
    from blocks.storage import FallbackStorage, LocalBucket, S3Bucket
    from blocks.transcriber import LocalWhisper, OpenAITranscriber
    from vibeinsight.settings import Settings

    for k in ("FLY_S3_ENDPOINT", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
              "VIBEINSIGHT_FALLBACK_S3_ENDPOINT", "VIBEINSIGHT_STORAGE", "VIBEINSIGHT_TRANSCRIBER",
              "VIBEINSIGHT_ANALYZER", "PREFECT_API_URL"):  # no API: no saved block document is looked up
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path))
    s = Settings()
    assert isinstance(registry.storage(s), LocalBucket)
    t = registry.transcriber(s)
    assert isinstance(t, LocalWhisper) and t.model_cache == str(tmp_path / "models")
    assert type(registry.analyzer(s)) is LocalAnalyzer
    monkeypatch.setenv("FLY_S3_ENDPOINT", "https://fly.storage.tigris.dev")
    monkeypatch.setenv("FLY_S3_ACCESS_KEY_ID", "tid")
    monkeypatch.setenv("FLY_S3_SECRET_ACCESS_KEY", "tsecret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("VIBEINSIGHT_OPENAI_MODEL", "gpt-4o-mini-transcribe")
    monkeypatch.setenv("GOOGLE_API_KEY", "g-x")
    s = Settings()
    st = registry.storage(s)
    assert isinstance(st, S3Bucket) and st.region == "nrt" and st.bucket_name == "vibeinsight-audio"
    assert st.endpoint == "https://fly.storage.tigris.dev" and st.access_key_id == "tid"
    assert st.secret_access_key.get_secret_value() == "tsecret" and "tsecret" not in repr(st)
    t = registry.transcriber(s)
    assert isinstance(t, OpenAITranscriber) and t.model == "gpt-4o-mini-transcribe" and t.parallel_chunks() == 8
    assert t.api_key.get_secret_value() == "sk-x"
    assert isinstance(registry.analyzer(s), GeminiAnalyzer)
    monkeypatch.setenv("VIBEINSIGHT_FALLBACK_S3_ENDPOINT", "https://ref.supabase.co/storage/v1/s3")
    fb = registry.storage(Settings())
    assert isinstance(fb, FallbackStorage) and fb.fallback.service == "supabase"
    assert fb.fallback.region == "ap-northeast-1" and fb.fallback.role() == "fallback"
    monkeypatch.setenv("VIBEINSIGHT_TRANSCRIBER", "local")  # an explicit choice wins over a present key
    assert isinstance(registry.transcriber(Settings()), LocalWhisper)


def test_registry_picks_the_status_store_from_settings(tmp_path, monkeypatch):
    from blocks import registry
    from blocks.status_store import SupabaseStatusStore
    from vibeinsight.settings import Settings

    for k in ("VIBEINSIGHT_STATUS_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "PREFECT_API_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path))
    assert type(registry.status_store(Settings())).__name__ == "SQLiteStatusStore"
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "k.k.k")
    store = registry.status_store(Settings())
    assert isinstance(store, SupabaseStatusStore) and store.service_role_key.get_secret_value() == "k.k.k"
    assert store.url == "https://abc.supabase.co" and "k.k.k" not in repr(store)
    monkeypatch.setenv("VIBEINSIGHT_STATUS_URL", "postgresql://u@h/db")
    monkeypatch.setenv("VIBEINSIGHT_STATUS_PG_ROLE", "service_role")
    store = registry.status_store(Settings())
    assert type(store).__name__ == "PostgresStatusStore" and store.pg_role == "service_role"
