"""Settings read from the environment (pydantic-settings); no Prefect, no network.

Each outside system's options are declared once, as a plain model (`S3Options`,
`WhisperOptions`, …). Its settings group reads them from the environment (the names below are
the project's documented variables), and its Prefect block in blocks/ inherits the same model,
so a field, its type and its default exist in one place. blocks/registry.py builds the blocks.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic.aliases import AliasGenerator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path(os.environ.get("VIBEINSIGHT_HOME") or Path.home() / ".vibeinsight")


def env_group(options: type[BaseModel], prefix: str, names: dict[str, str | AliasChoices] | None = None,
              **defaults) -> type[BaseSettings]:
    """A settings class with `options`' fields, each read from PREFIX+FIELD (or `names[field]`).

    `defaults` overrides a field's default for this group only (a second S3 endpoint, say).
    """
    names = names or {}

    def alias(field: str) -> AliasChoices:
        name = names.get(field, prefix + field.upper())
        return name if isinstance(name, AliasChoices) else AliasChoices(name, field)

    config = SettingsConfigDict(extra="ignore", populate_by_name=True,
                                alias_generator=AliasGenerator(validation_alias=alias))
    namespace: dict = {"model_config": config, "__module__": __name__, "__annotations__": {}}
    for field, value in defaults.items():
        namespace["__annotations__"][field] = options.model_fields[field].annotation
        namespace[field] = value
    name = options.__name__.replace("Options", "") + ("Settings" if not defaults else "OverrideSettings")
    return type(name, (options, BaseSettings), namespace)


# --- what ingest and transcode do (core only) ---

# Upload and per-user run limits shared with the Edge Function, which imports the same JSON file
# (Supabase bundles only what sits under supabase/functions/, hence its place).
SHARED_LIMITS_PATH = Path("infra") / "supabase" / "functions" / "_shared" / "limits.json"


def shared_limits() -> dict:
    """The shared limits file: beside the package in a checkout, else under VIBEINSIGHT_APP_DIR or the cwd."""
    roots = [Path(__file__).resolve().parents[1], Path(os.environ.get("VIBEINSIGHT_APP_DIR", ".")), Path.cwd()]
    for root in roots:
        if (root / SHARED_LIMITS_PATH).is_file():
            return json.loads((root / SHARED_LIMITS_PATH).read_text())
    raise FileNotFoundError(f"{SHARED_LIMITS_PATH} not found under {[str(r) for r in roots]}")


_SHARED = shared_limits()


class Limits(BaseSettings):
    """What ingest accepts and what a user may start. Defaults fit a meeting or call recording and come
    from the shared limits file, so the Edge Function checks uploads against the same figures."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_", extra="ignore")

    max_bytes: int = Field(_SHARED["max_bytes"], description="largest upload accepted")
    content_types: list[str] = Field(default_factory=lambda: list(_SHARED["content_types"]),
                                     description="content types a client may upload")
    extensions: list[str] = Field(default_factory=lambda: list(_SHARED["extensions"]),
                                  description="file extensions a client may upload")
    max_runs_in_flight_per_user: int = Field(_SHARED["max_runs_in_flight_per_user"], ge=1)
    max_runs_per_hour_per_user: int = Field(_SHARED["max_runs_per_hour_per_user"], ge=1)
    max_duration_s: float = Field(4 * 3600, description="longest recording accepted")
    min_duration_s: float = Field(0.5, description="shorter cannot hold a word")
    # ffmpeg and ffprobe are SIGKILLed past these (vibeinsight/audio/ffmpeg.py). A 4-hour recording
    # transcodes in about 2 minutes on one core here.
    probe_timeout_s: float = Field(30.0, gt=0, description="longest ffprobe of an upload")
    ffmpeg_timeout_s: float = Field(900.0, gt=0, description="longest transcode (or chunk cut)")
    duration_margin_s: float = Field(2.0, ge=0, description="decoding stops this far past max_duration_s")


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
    # Opus exists for the network (an API engine); the local engine gets 16-bit PCM, which costs
    # ffmpeg almost nothing to write and the engine nothing to decode (the flow chooses).
    codec: Literal["opus", "pcm"] = "opus"
    min_chunk_s: float = 30.0  # do not cut tiny chunks at every short pause
    silence_db: float = -35.0
    silence_min_s: float = 0.4
    # Channels whose difference carries less than this share of the signal are
    # one mix, not two speaker tracks.
    stereo_min_difference: float = 0.1

    @property
    def kbps(self) -> int:
        """The compact tracks' bit rate: Opus's setting, or PCM's 16 bits a sample."""
        return self.bitrate_kbps if self.codec == "opus" else self.sample_rate * 16 // 1000

    @property
    def extension(self) -> str:
        return ".ogg" if self.codec == "opus" else ".wav"


# --- the outside systems' options: the fields of their blocks ---

class S3Options(BaseModel):
    """An S3-compatible bucket (blocks.storage.S3Bucket)."""

    endpoint: str | None = Field(None, description="e.g. https://fly.storage.tigris.dev; None: AWS")
    bucket_name: str = "vibeinsight-audio"
    region: str = "nrt"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    upload_prefixes: list[str] = Field(default_factory=lambda: ["uploads/"], description="keys clients may upload to")


def available_mb() -> float | None:
    """Memory a new allocation can get without swapping: Linux's MemAvailable (free memory plus the
    page cache it can drop), else the free pages; None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


# Read once per process: every chunk of every run then agrees on the batch and the number of model
# replicas (a later reading, with the model loaded, would see less memory and ask for another model).
@lru_cache(maxsize=1)
def machine_batch_size() -> int:
    """Windows decoded together: 8 (faster-whisper's default) with memory to spare, fewer on a small machine.

    One 30 s window costs ~40 MB with base int8 and beam 5 (features, encoder output, beams)."""
    mb = available_mb()
    return 8 if mb is None else int(max(1, min(8, mb // 400)))


# A chunk of up to 180 s being decoded: audio, VAD, features, its batch (bench/memory.py: 1,449 MB at
# peak for two at once with the model and diarization loaded).
CHUNK_IN_FLIGHT_MB = 700


@lru_cache(maxsize=1)
def machine_concurrency() -> int:
    """Chunks transcribed at once: one per core, fewer when available memory cannot hold them."""
    mb = available_mb()
    cores = os.cpu_count() or 1
    return cores if mb is None else int(max(1, min(cores, mb // CHUNK_IN_FLIGHT_MB)))


class WhisperOptions(BaseModel):
    """faster-whisper on the CPU (blocks.transcriber.LocalWhisper), batched (BatchedInferencePipeline)."""

    model: Literal["base", "tiny.en"] = "base"
    beam_size: int = 5
    vad_filter: bool = True
    no_speech_threshold: float = 0.6
    # One chunk per core beats one chunk on every core: CTranslate2's beam search keeps only ~1.6 of
    # 2 cores busy, two single-threaded chunks keep ~1.9 (bench/transcribe_engine.py).
    concurrency: int = Field(0, ge=0, description="chunks transcribed at once in one process; 0: one per core, "
                                                  "as memory allows")
    cpu_threads: int = Field(0, ge=0, description="0: the machine's cores shared among concurrent chunks")
    batch_size: int = Field(0, ge=0, description="30 s windows decoded together; 0: from the machine's free memory")
    # Peak memory still grows with the chunk (measured with the model loaded, decoding, VAD,
    # features, one encoder batch and diarization: 670 MB for a 120 s chunk, 1,086 MB for 600 s),
    # so chunks stay short and the peak flat however long the recording.
    max_chunk_s: float = Field(180.0, gt=0, description="longest chunk; peak memory grows with it")
    # With --language auto, a pause this long starts a new 30 s window (one turn, one language, per
    # window); 0 packs speech into full windows as faster-whisper does (speech a window's language
    # dropped is decoded again on its own either way).
    language_split_pause_s: float = Field(0.0, ge=0, description="auto language: a pause that starts a new window")


class OpenAIOptions(BaseModel):
    """OpenAI's transcription endpoint (blocks.transcriber.OpenAITranscriber)."""

    model: Literal["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"] = "whisper-1"
    api_key: SecretStr | None = Field(None, description="None: the SDK reads OPENAI_API_KEY")
    base_url: str | None = Field(None, description="None: the SDK's default (OpenAI-compatible servers)")
    concurrency: int = Field(8, ge=1, description="chunks in flight per run (the Prefect limit caps all runs)")
    chunk_s: float = Field(300.0, description="chunk length: shorter chunks finish sooner in parallel")
    timeout_s: float = 120.0
    attempts: int = 5
    prompt: str | None = Field(None, description="vocabulary hint (names, jargon)")


class GeminiOptions(BaseModel):
    """Gemini through google-genai (blocks.analyzer.GeminiAnalyzer)."""

    model: str = "gemini-2.5-flash"
    api_key: SecretStr | None = Field(None, description="None: the SDK reads GOOGLE_API_KEY / GEMINI_API_KEY")
    base_url: str | None = Field(None, description="None: the SDK's default endpoint")
    max_input_tokens: int = Field(800_000, description="above this the transcript is split, analyzed in parts, merged")
    attempts: int = 5
    timeout_s: float = 180.0


class SupabaseOptions(BaseModel):
    """Supabase's REST API with the service role (blocks.status_store.SupabaseStatusStore)."""

    url: str | None = Field(None, description="SUPABASE_URL, https://<ref>.supabase.co")
    service_role_key: SecretStr | None = Field(None, description="never shipped to a client")
    timeout_s: float = 5.0


class DiarizeSettings(BaseSettings):
    """Speakers on a mono mix (vibeinsight.diarization): CAM++ embeddings clustered on the CPU."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_DIARIZE_", extra="ignore", populate_by_name=True)

    # auto: diarize a mono mix (stereo speaker tracks are labelled left/right already); on: the mix
    # of a stereo file too; off: never.
    mode: Literal["auto", "on", "off"] = Field("auto", validation_alias=AliasChoices("VIBEINSIGHT_DIARIZE", "mode"))
    threshold: float = Field(0.5, gt=0, lt=1, description="cosine similarity above which two voices are one speaker")
    max_speakers: int | None = Field(None, ge=1, description="upper bound when --max-speakers is not given")
    threads: int = Field(0, ge=0, description="onnxruntime threads; 0: the machine's cores")


class StatusSettings(BaseSettings):
    """The processing_status mirror: where it is written and how often."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_STATUS_", extra="ignore")

    # postgresql://… or sqlite:///…; unset: Supabase when SUPABASE_URL and the key are set, else SQLite.
    url: str | None = None
    pg_role: str | None = Field(None, description="SET ROLE with a direct PostgreSQL store, e.g. service_role")
    min_interval_s: float = 1.0
    # The terminal row is retried while the store is down: the hook waits this long for it (the
    # run is over; past it the observer and reconcile-status repair the row), the writer this long.
    final_wait_s: float = Field(30.0, ge=0)
    final_give_up_s: float = Field(600.0, gt=0)
    terminal_grace_s: float = 3.0
    reconcile_min_age_s: float = 60.0
    # A run Pending this long was taken by a worker that died before starting it (a worker starts a
    # run in seconds; a Fly Machine in well under a minute): scheduled again.
    reconcile_pending_after_s: float = 300.0
    # A PENDING row with no flow run this old is one whose run was never created: FAILED.
    reconcile_orphan_after_s: float = 300.0


class QuotaSettings(BaseSettings):
    """QUOTA area: which plan the report and the guard measure against, and what the guard does."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_QUOTA_", extra="ignore")

    plan: Literal["free", "pro", "team"] = "free"
    plan_table: str | None = None  # supabase-current (the file's default) or design
    plans_file: Path | None = None  # defaults to vibeinsight/data/providers.json
    ledger_url: str | None = None  # postgresql://…; else VIBEINSIGHT_STATUS_URL if PostgreSQL, else SQLite
    warn_pct: float = 80.0
    limit_pct: float = 100.0
    guard: bool = True  # Supabase egress or Realtime messages near the plan: compact runs
    enforce: bool = True  # refuse (quota_exceeded) when a hard provider limit or the budget would be crossed
    # The month's API budget in USD (every provider's booked cost); unset: no budget.
    budget_usd: float | None = Field(None, validation_alias=AliasChoices("VIBEINSIGHT_BUDGET_USD", "budget_usd"))
    # Realtime subscribers per session: each status write is one message to each of them.
    subscribers_per_session: int = Field(1, ge=0)
    # One user's share of the plan's monthly Supabase egress: past it, that user's new sessions are
    # refused (quota_exceeded) while everyone else's still run.
    user_share_pct: float = Field(25.0, gt=0, le=100)
    # Opus keeps wideband speech down to ~12 kb/s; below that it falls back to narrowband.
    compact_bitrate_kbps: int = 12
    compact_status_interval_s: float = 5.0
    # Result documents without indentation (about a third smaller); the guard turns it on.
    compact_results: bool = False


class WebSettings(BaseSettings):
    """What `vibeinsight web` hands the reference page (clients/web): only what a browser may know.
    The Supabase project URL is SUPABASE_URL (SupabaseOptions.url)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    function_url: str | None = Field(None, validation_alias=AliasChoices("VIBEINSIGHT_FUNCTION_URL", "function_url"),
                                     description="the Edge Function, https://<ref>.supabase.co/functions/v1/process-audio")
    anon_key: str | None = Field(None, validation_alias=AliasChoices("SUPABASE_ANON_KEY", "anon_key"),
                                 description="the project's public anon key (RLS limits it to the user's rows)")


S3Settings = env_group(S3Options, "FLY_S3_", {"addressing_style": "VIBEINSIGHT_S3_ADDRESSING_STYLE",
                                              "upload_prefixes": "VIBEINSIGHT_UPLOAD_PREFIXES"})
# A second S3 endpoint used only when the primary fails: Supabase Storage's S3 endpoint
# (https://<ref>.supabase.co/storage/v1/s3, in the Supabase project's region) or any other.
FallbackS3Settings = env_group(S3Options, "VIBEINSIGHT_FALLBACK_S3_",
                               {"addressing_style": "VIBEINSIGHT_S3_ADDRESSING_STYLE",
                                "upload_prefixes": "VIBEINSIGHT_UPLOAD_PREFIXES",
                                "bucket_name": AliasChoices("VIBEINSIGHT_FALLBACK_S3_BUCKET_NAME", "FLY_S3_BUCKET_NAME",
                                                            "bucket_name")},
                               region="ap-northeast-1")
WhisperSettings = env_group(WhisperOptions, "VIBEINSIGHT_WHISPER_")
OpenAISettings = env_group(OpenAIOptions, "VIBEINSIGHT_OPENAI_", {"api_key": "OPENAI_API_KEY",
                                                                  "base_url": "OPENAI_BASE_URL"})
GeminiSettings = env_group(GeminiOptions, "VIBEINSIGHT_GEMINI_",
                           {"api_key": AliasChoices("GOOGLE_API_KEY", "GEMINI_API_KEY", "api_key"),
                            "base_url": "GOOGLE_GEMINI_BASE_URL"})
SupabaseSettings = env_group(SupabaseOptions, "SUPABASE_")


class Settings(BaseSettings):
    """Everything a run needs to know, from VIBEINSIGHT_* and the design's variables."""

    model_config = SettingsConfigDict(extra="ignore")

    home: Path = Field(default_factory=default_home, alias="VIBEINSIGHT_HOME")
    # Logs and traces (vibeinsight/logs.py, vibeinsight/tracing.py). LOG_FORMAT: json on Fly Machines and in
    # the image (one JSON object a line), text on a terminal; LOG_LEVEL applies to every logger of a process.
    log_level: str = Field("WARNING", alias="LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT")
    # OpenTelemetry spans over OTLP/HTTP; the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME.
    enable_tracing: bool = Field(False, alias="ENABLE_TRACING")
    # Backend choice: "auto" uses the cloud service when its settings are present, else local.
    storage_backend: Literal["auto", "local", "s3"] = Field("auto", alias="VIBEINSIGHT_STORAGE")
    transcriber_backend: Literal["auto", "local", "openai"] = Field("auto", alias="VIBEINSIGHT_TRANSCRIBER")
    analyzer_backend: Literal["auto", "local", "gemini"] = Field("auto", alias="VIBEINSIGHT_ANALYZER")
    # Prefect global concurrency limit held around every transcription API call, across runs.
    api_concurrency_limit: str = Field("openai-transcribe", alias="VIBEINSIGHT_API_CONCURRENCY_LIMIT")
    price_table: Path | None = Field(None, alias="VIBEINSIGHT_PRICE_TABLE")
    # The image holds the joined model outside VIBEINSIGHT_HOME, so a run Machine (an empty home each
    # time) never assembles or downloads it.
    model_dir: Path | None = Field(None, alias="VIBEINSIGHT_MODEL_DIR")
    # Set by Fly on every Machine: the run's outbound bytes are billed at this region's price.
    fly_region: str | None = Field(None, alias="FLY_REGION")

    limits: Limits = Field(default_factory=Limits)
    transcode: TranscodeSettings = Field(default_factory=TranscodeSettings)
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    fallback_s3: FallbackS3Settings = Field(default_factory=FallbackS3Settings)
    supabase: SupabaseSettings = Field(default_factory=SupabaseSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    diarize: DiarizeSettings = Field(default_factory=DiarizeSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    web: WebSettings = Field(default_factory=WebSettings)

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
        return self.model_dir or self.home / "models"


def env_name(model_title: str, loc: list[str]) -> str:
    """The environment variable behind a settings validation error (model title and error location)."""
    field = loc[-1] if loc else ""
    for cls in (Settings, *(f.default_factory for f in Settings.model_fields.values() if f.default_factory)):
        if getattr(cls, "__name__", None) != model_title:
            continue
        info = cls.model_fields.get(field)
        alias = getattr(info, "validation_alias", None) or getattr(info, "alias", None)
        if isinstance(alias, AliasChoices):
            alias = alias.choices[0]
        if isinstance(alias, str):
            return alias
        return (str(cls.model_config.get("env_prefix", "")) + field).upper()
    return field.upper() or model_title


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
