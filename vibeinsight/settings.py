"""Settings read from the environment (pydantic-settings); no Prefect, no network."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path(os.environ.get("VIBEINSIGHT_HOME") or Path.home() / ".vibeinsight")


class Limits(BaseSettings):
    """What ingest accepts. Defaults fit a meeting or call recording."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_", extra="ignore")

    max_bytes: int = Field(2 * 1024**3, description="largest upload accepted")
    max_duration_s: float = Field(4 * 3600, description="longest recording accepted")
    min_duration_s: float = Field(0.5, description="shorter cannot hold a word")


class TranscodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_TRANSCODE_", extra="ignore")

    sample_rate: int = 16_000
    # Opus in VoIP mode stays intelligible for Whisper far below the design's
    # 500 KB/min average; 24 kb/s is 180 KB a minute.
    bitrate_kbps: int = 24
    # libopus effort 0-10: 5 encodes twice as fast as the default 10 at the same size here
    # (5-minute WAV: 2.5 s against 4.6 s), and the transcode pass is the pipeline's own cost.
    opus_compression_level: int = Field(5, ge=0, le=10)
    max_chunk_s: float = 600.0
    max_chunk_bytes: int = 20 * 1024**2  # well under OpenAI's 25 MB per request
    min_chunk_s: float = 30.0  # do not cut tiny chunks at every short pause
    silence_db: float = -35.0
    silence_min_s: float = 0.4
    # Channels whose difference carries less than this share of the signal are
    # one mix, not two speaker tracks.
    stereo_min_difference: float = 0.1


class WhisperSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_WHISPER_", extra="ignore")

    model: Literal["base", "tiny.en"] = "base"
    beam_size: int = 5
    vad_filter: bool = True
    no_speech_threshold: float = 0.6
    concurrency: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    cpu_threads: int = 0  # 0: share the machine's cores among concurrent chunks
    # faster-whisper computes the spectrogram of a whole chunk at once, so its peak memory grows
    # with chunk length (measured: +220 MB for 300 s, +545 MB for 600 s): short chunks keep the
    # peak flat however long the recording.
    max_chunk_s: float = 120.0


class QuotaSettings(BaseSettings):
    """QUOTA area: which plan the report and the guard measure against, and what the guard does."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_QUOTA_", extra="ignore")

    plan: Literal["free", "pro", "team"] = "free"
    plan_table: str | None = None  # supabase-current (the file's default) or design
    plans_file: Path | None = None  # defaults to vibeinsight/data/plans.json
    ledger_url: str | None = None  # postgresql://…; else VIBEINSIGHT_STATUS_URL if PostgreSQL, else SQLite
    warn_pct: float = 80.0
    limit_pct: float = 100.0
    guard: bool = True  # forecast over the plan: compact transcode, slower status updates
    enforce: bool = True  # egress at limit_pct: refuse new sessions (quota_exceeded)
    # Opus keeps wideband speech down to ~12 kb/s; below that it falls back to narrowband.
    compact_bitrate_kbps: int = 12
    compact_status_interval_s: float = 5.0


class Settings(BaseSettings):
    """Everything a run needs to know, from VIBEINSIGHT_* and the design's variables."""

    model_config = SettingsConfigDict(extra="ignore")

    home: Path = Field(default_factory=default_home, alias="VIBEINSIGHT_HOME")
    log_level: str = Field("WARNING", alias="LOG_LEVEL")
    enable_tracing: bool = Field(False, alias="ENABLE_TRACING")
    status_min_interval_s: float = Field(1.0, alias="VIBEINSIGHT_STATUS_MIN_INTERVAL_S")

    # Cloud settings of the design; unused while they are empty (local defaults).
    fly_s3_endpoint: str | None = Field(None, alias="FLY_S3_ENDPOINT")
    fly_s3_access_key_id: str | None = Field(None, alias="FLY_S3_ACCESS_KEY_ID")
    fly_s3_secret_access_key: SecretStr | None = Field(None, alias="FLY_S3_SECRET_ACCESS_KEY")
    fly_s3_region: str = Field("nrt", alias="FLY_S3_REGION")
    fly_s3_bucket_name: str = Field("vibeinsight-audio", alias="FLY_S3_BUCKET_NAME")
    supabase_url: str | None = Field(None, alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(None, alias="SUPABASE_SERVICE_ROLE_KEY")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    gemini_api_key: SecretStr | None = Field(None, alias="GEMINI_API_KEY")
    # Backend choice: "auto" uses the cloud service when its settings are present, else local.
    storage_backend: Literal["auto", "local", "s3"] = Field("auto", alias="VIBEINSIGHT_STORAGE")
    transcriber_backend: Literal["auto", "local", "openai"] = Field("auto", alias="VIBEINSIGHT_TRANSCRIBER")
    analyzer_backend: Literal["auto", "local", "gemini"] = Field("auto", alias="VIBEINSIGHT_ANALYZER")
    # Status store: SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY, or postgresql://… here, else SQLite.
    status_url: str | None = Field(None, alias="VIBEINSIGHT_STATUS_URL")
    # STATUS area: role to SET with a direct PostgreSQL store (e.g. service_role), observer timing.
    status_pg_role: str | None = Field(None, alias="VIBEINSIGHT_STATUS_PG_ROLE")
    status_terminal_grace_s: float = Field(3.0, alias="VIBEINSIGHT_STATUS_TERMINAL_GRACE_S")
    status_reconcile_min_age_s: float = Field(60.0, alias="VIBEINSIGHT_STATUS_RECONCILE_MIN_AGE_S")
    # Cloud backends (CLOUD area). Fallback storage: Supabase Storage's S3 endpoint
    # (https://<ref>.supabase.co/storage/v1/s3) or any second S3 endpoint.
    fallback_s3_endpoint: str | None = Field(None, alias="VIBEINSIGHT_FALLBACK_S3_ENDPOINT")
    fallback_s3_access_key_id: str | None = Field(None, alias="VIBEINSIGHT_FALLBACK_S3_ACCESS_KEY_ID")
    fallback_s3_secret_access_key: SecretStr | None = Field(None, alias="VIBEINSIGHT_FALLBACK_S3_SECRET_ACCESS_KEY")
    fallback_s3_region: str = Field("ap-northeast-1", alias="VIBEINSIGHT_FALLBACK_S3_REGION")
    fallback_s3_bucket_name: str | None = Field(None, alias="VIBEINSIGHT_FALLBACK_S3_BUCKET_NAME")
    s3_addressing_style: Literal["auto", "virtual", "path"] = Field("auto", alias="VIBEINSIGHT_S3_ADDRESSING_STYLE")
    upload_prefixes: list[str] = Field(["uploads/"], alias="VIBEINSIGHT_UPLOAD_PREFIXES")
    openai_model: Literal["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"] = Field(
        "whisper-1", alias="VIBEINSIGHT_OPENAI_MODEL")
    openai_concurrency: int = Field(8, ge=1, alias="VIBEINSIGHT_OPENAI_CONCURRENCY")
    openai_chunk_s: float = Field(300.0, alias="VIBEINSIGHT_OPENAI_CHUNK_S")
    google_api_key: SecretStr | None = Field(None, alias="GOOGLE_API_KEY")
    gemini_model: str = Field("gemini-2.5-flash", alias="VIBEINSIGHT_GEMINI_MODEL")
    gemini_max_input_tokens: int = Field(800_000, alias="VIBEINSIGHT_GEMINI_MAX_INPUT_TOKENS")
    # Prefect global concurrency limit held around every transcription API call, across runs.
    api_concurrency_limit: str = Field("openai-transcribe", alias="VIBEINSIGHT_API_CONCURRENCY_LIMIT")
    price_table: Path | None = Field(None, alias="VIBEINSIGHT_PRICE_TABLE")

    limits: Limits = Field(default_factory=Limits)
    transcode: TranscodeSettings = Field(default_factory=TranscodeSettings)
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)

    @property
    def bucket_dir(self) -> Path:
        return self.home / "bucket"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def status_db(self) -> Path:
        return self.home / "status.db"

    @property
    def model_cache(self) -> Path:
        return self.home / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
