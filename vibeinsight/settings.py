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

    limits: Limits = Field(default_factory=Limits)
    transcode: TranscodeSettings = Field(default_factory=TranscodeSettings)
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)

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
