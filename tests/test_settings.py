"""Settings once: the documented environment names fill the groups, and the blocks built from them."""

from __future__ import annotations

import pytest

from blocks import registry
from blocks.analyzer import GeminiAnalyzer
from blocks.status_store import PostgresStatusStore, SupabaseStatusStore
from blocks.storage import FallbackStorage, S3Bucket
from blocks.transcriber import LocalWhisper, OpenAITranscriber
from vibeinsight.settings import GeminiOptions, OpenAIOptions, S3Options, Settings, WhisperOptions

pytestmark = pytest.mark.unit

CLOUD_ENV = {
    "FLY_S3_ENDPOINT": "https://fly.storage.tigris.dev", "FLY_S3_ACCESS_KEY_ID": "tid",
    "FLY_S3_SECRET_ACCESS_KEY": "tsecret", "FLY_S3_REGION": "iad", "FLY_S3_BUCKET_NAME": "audio",
    "VIBEINSIGHT_S3_ADDRESSING_STYLE": "path", "VIBEINSIGHT_FALLBACK_S3_ENDPOINT": "https://ref.supabase.co/storage/v1/s3",
    "OPENAI_API_KEY": "sk-test", "VIBEINSIGHT_OPENAI_MODEL": "gpt-4o-transcribe", "VIBEINSIGHT_OPENAI_CONCURRENCY": "3",
    "GEMINI_API_KEY": "g-test", "VIBEINSIGHT_GEMINI_MODEL": "gemini-2.5-pro", "SUPABASE_URL": "https://ref.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "srk", "VIBEINSIGHT_WHISPER_BEAM_SIZE": "3", "VIBEINSIGHT_STATUS_MIN_INTERVAL_S": "2.5",
}


@pytest.fixture()
def env(monkeypatch, tmp_path):
    for name in (*CLOUD_ENV, "PREFECT_API_URL", "VIBEINSIGHT_STATUS_URL", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(tmp_path))
    return monkeypatch


def test_documented_names_fill_the_blocks(env):
    for k, v in CLOUD_ENV.items():
        env.setenv(k, v)
    s = Settings()
    assert s.status.min_interval_s == 2.5
    store = registry.storage(s)
    assert isinstance(store, FallbackStorage)
    assert (store.primary.endpoint, store.primary.bucket_name, store.primary.region) == (
        "https://fly.storage.tigris.dev", "audio", "iad")
    assert store.primary.secret_access_key.get_secret_value() == "tsecret"
    assert store.primary.addressing_style == store.fallback.addressing_style == "path"
    assert store.fallback.service == "supabase" and store.fallback.served_as == "fallback"
    assert store.fallback.region == "ap-northeast-1"  # the fallback's own default, not Fly's
    assert store.fallback.bucket_name == "audio"  # same bucket name unless told otherwise
    t = registry.transcriber(s)
    assert isinstance(t, OpenAITranscriber) and (t.model, t.concurrency) == ("gpt-4o-transcribe", 3)
    assert t.api_key.get_secret_value() == "sk-test"
    a = registry.analyzer(s)
    assert isinstance(a, GeminiAnalyzer) and a.model == "gemini-2.5-pro" and a.api_key.get_secret_value() == "g-test"
    st = registry.status_store(s)
    assert isinstance(st, SupabaseStatusStore) and st.service_role_key.get_secret_value() == "srk"


def test_google_api_key_is_read_too(env):
    env.setenv("GOOGLE_API_KEY", "google-key")
    assert Settings().gemini.api_key.get_secret_value() == "google-key"


def test_local_defaults_and_one_default_per_field(env):
    s = Settings()
    w = registry.transcriber(s)
    assert isinstance(w, LocalWhisper) and w.beam_size == 5
    # the block and its settings group share one declaration: the same defaults, field for field
    for options, group, block in ((WhisperOptions, type(s.whisper), LocalWhisper), (S3Options, type(s.s3), S3Bucket),
                                  (OpenAIOptions, type(s.openai), OpenAITranscriber),
                                  (GeminiOptions, type(s.gemini), GeminiAnalyzer)):
        for name in options.model_fields:
            assert group.model_fields[name].default == block.model_fields[name].default, (block.__name__, name)
    assert w.concurrency == s.whisper.concurrency == 0  # one chunk per core (as memory allows), in both


def test_status_url_picks_the_store_and_an_unknown_scheme_is_an_error(env):
    env.setenv("VIBEINSIGHT_STATUS_URL", "postgresql://u@127.0.0.1/db")
    env.setenv("VIBEINSIGHT_STATUS_PG_ROLE", "service_role")
    store = registry.status_store(Settings())
    assert isinstance(store, PostgresStatusStore) and store.pg_role == "service_role"
    env.setenv("VIBEINSIGHT_STATUS_URL", "mysql://u@host/db")
    with pytest.raises(registry.SettingsError, match="postgresql"):
        registry.status_store(Settings())


def test_secrets_stay_secret_in_blocks(env):
    for k, v in CLOUD_ENV.items():
        env.setenv(k, v)
    dumped = repr(registry.build_storage(Settings())) + repr(registry.build_transcriber(Settings()))
    assert "tsecret" not in dumped and "sk-test" not in dumped


@pytest.fixture()
def machine_reading():
    """Forget the process's one reading of the machine before and after (other tests see the real one)."""
    from vibeinsight import settings

    def forget():
        settings.machine_concurrency.cache_clear()
        settings.machine_batch_size.cache_clear()

    forget()
    yield forget
    forget()


def test_chunks_at_once_and_batch_follow_cores_and_available_memory(monkeypatch, machine_reading):
    from blocks import transcriber
    from vibeinsight import settings

    for module in (settings, transcriber):  # a 4-core machine (vibeinsight.cores: the cores this process may use)
        monkeypatch.setattr(module, "usable_cores", lambda: 4)
    for mb, chunks, batch in ((16000.0, 4, 8), (1500.0, 2, 3), (500.0, 1, 1), (None, 4, 8)):
        monkeypatch.setattr(settings, "available_mb", lambda mb=mb: mb)
        machine_reading()
        assert (settings.machine_concurrency(), settings.machine_batch_size()) == (chunks, batch), mb
    # the engine shares the machine's windows among the chunks it decodes at once
    monkeypatch.setattr(settings, "available_mb", lambda: 16000.0)
    machine_reading()
    w = LocalWhisper(model_cache="/nowhere")
    assert (w.parallel_chunks(), w.threads(), w.transcribe_options("ja")["batch_size"]) == (4, 1, 2)
    # read once a process: with the model loaded memory looks shorter, and nothing changes (no second model)
    monkeypatch.setattr(settings, "available_mb", lambda: 500.0)
    assert (w.parallel_chunks(), w.transcribe_options("ja")["batch_size"]) == (4, 2)
    w = LocalWhisper(model_cache="/nowhere", concurrency=1)
    assert (w.parallel_chunks(), w.threads(), w.transcribe_options("ja")["batch_size"]) == (1, 4, 8)
