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

from vibeinsight.cores import usable_cores


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
        namespace[field] = Field(value, description=options.model_fields[field].description)
    name = options.__name__.replace("Options", "") + ("Settings" if not defaults else "OverrideSettings")
    return type(name, (options, BaseSettings), namespace)


# --- what ingest and transcode do (core only) ---

# Upload and per-user run limits shared with the Edge Function, which imports
# infra/supabase/functions/_shared/limits.json (Supabase bundles only what sits under supabase/functions/).
# The package ships its own copy, so an installed wheel needs no checkout; tests/test_package.py
# keeps the two identical.
SHARED_LIMITS_PATH = Path("infra") / "supabase" / "functions" / "_shared" / "limits.json"
LIMITS_FILE = Path(__file__).resolve().parent / "data" / "limits.json"


def shared_limits() -> dict:
    """The shared limits, from the package's copy."""
    return json.loads(LIMITS_FILE.read_text())


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
    max_runs_in_flight_per_user: int = Field(_SHARED["max_runs_in_flight_per_user"], ge=1,
                                             description="runs a user may have in flight (the Edge Function enforces it)")
    max_runs_per_hour_per_user: int = Field(_SHARED["max_runs_per_hour_per_user"], ge=1,
                                            description="runs a user may start in an hour (the Edge Function enforces it)")
    # What the Edge Function's /uploads hands one user (decided in SQL, request_upload()).
    max_uploads_per_hour_per_user: int = Field(_SHARED["max_uploads_per_hour_per_user"], ge=1,
                                               description="upload URLs a user may ask for in an hour")
    max_upload_bytes_per_day_per_user: int = Field(_SHARED["max_upload_bytes_per_day_per_user"], ge=1,
                                                   description="declared bytes of the last 24 hours")
    max_duration_s: float = Field(4 * 3600, description="longest recording accepted")
    min_duration_s: float = Field(0.5, description="shorter cannot hold a word")
    # ffmpeg and ffprobe are SIGKILLed past these (vibeinsight/audio/ffmpeg.py). A 4-hour recording
    # transcodes in about 2 minutes on one core here.
    probe_timeout_s: float = Field(30.0, gt=0, description="longest ffprobe of an upload")
    ffmpeg_timeout_s: float = Field(900.0, gt=0, description="longest transcode (or chunk cut)")
    duration_margin_s: float = Field(2.0, ge=0, description="decoding stops this far past max_duration_s")
    # Resource limits of every ffmpeg and ffprobe process (setrlimit): a hostile upload that takes over
    # the decoder still cannot grow past these. A 4-hour stereo recording as PCM is under 1 GB.
    ffmpeg_max_memory_mb: int = Field(2048, ge=256, description="address space of one ffmpeg/ffprobe process")
    ffmpeg_max_file_mb: int = Field(2048, ge=16, description="largest file one ffmpeg process may write")
    ffmpeg_max_open_files: int = Field(64, ge=16, description="open files of one ffmpeg/ffprobe process")


class TranscodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_TRANSCODE_", extra="ignore")

    sample_rate: int = Field(16_000, description="sample rate of the compact tracks (Hz)")
    # Opus in VoIP mode stays intelligible for Whisper far below the design's
    # 500 KB/min average; 24 kb/s is 180 KB a minute.
    bitrate_kbps: int = Field(24, description="Opus bitrate of the compact tracks")
    # libopus effort 0-10: 5 encodes twice as fast as the default 10 at the same size here
    # (5-minute WAV: 2.5 s against 4.6 s), and the transcode pass is the pipeline's own cost.
    opus_compression_level: int = Field(5, ge=0, le=10, description="libopus effort, 0-10")
    max_chunk_s: float = Field(600.0, description="longest chunk")
    max_chunk_bytes: int = Field(20 * 1024**2, description="largest chunk: well under OpenAI's 25 MB a request")
    # Opus exists for the network (an API engine); the local engine gets 16-bit PCM, which costs
    # ffmpeg almost nothing to write and the engine nothing to decode (the flow chooses).
    codec: Literal["opus", "pcm"] = Field("opus", description="compact track codec; the flow picks pcm for the local engine")
    min_chunk_s: float = Field(30.0, description="shortest chunk: no cut at every short pause")
    silence_db: float = Field(-35.0, description="level below which audio counts as silence (dB)")
    silence_min_s: float = Field(0.4, description="shortest silence a chunk may be cut at")
    # Channels whose difference carries less than this share of the signal are
    # one mix, not two speaker tracks.
    stereo_min_difference: float = Field(0.1, description="share of the signal the channels must differ by to be two speaker tracks")

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
    bucket_name: str = Field("vibeinsight-audio", description="the bucket of uploads and results")
    region: str = Field("nrt", description="the bucket's region (Tokyo)")
    access_key_id: str | None = Field(None, description="None: boto3's chain (Fly's OIDC web identity)")
    secret_access_key: SecretStr | None = Field(None, description="secret of the access key")
    addressing_style: Literal["auto", "virtual", "path"] = Field("auto", description="path for endpoints without bucket subdomains")
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
    cores = usable_cores()
    return cores if mb is None else int(max(1, min(cores, mb // CHUNK_IN_FLIGHT_MB)))


class WhisperOptions(BaseModel):
    """faster-whisper on the CPU (blocks.transcriber.LocalWhisper), batched (BatchedInferencePipeline)."""

    model: Literal["base", "tiny.en"] = Field("base", description="bundled model: base (multilingual) or tiny.en")
    beam_size: int = Field(5, description="beam size")
    vad_filter: bool = Field(True, description="Silero VAD: decode speech only")
    no_speech_threshold: float = Field(0.6, description="a segment more likely silence than this is dropped")
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

    model: Literal["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"] = Field("whisper-1", description="transcription model")
    api_key: SecretStr | None = Field(None, description="None: the SDK reads OPENAI_API_KEY")
    base_url: str | None = Field(None, description="None: the SDK's default (OpenAI-compatible servers)")
    concurrency: int = Field(8, ge=1, description="chunks in flight per run (the Prefect limit caps all runs)")
    chunk_s: float = Field(300.0, description="chunk length: shorter chunks finish sooner in parallel")
    timeout_s: float = Field(120.0, description="one request's timeout")
    attempts: int = Field(5, description="tries of a call (429, 5xx, timeouts retried)")
    prompt: str | None = Field(None, description="vocabulary hint (names, jargon)")


class GeminiOptions(BaseModel):
    """Gemini through google-genai (blocks.analyzer.GeminiAnalyzer)."""

    model: str = Field("gemini-2.5-flash", description="Gemini model")
    api_key: SecretStr | None = Field(None, description="None: the SDK reads GOOGLE_API_KEY / GEMINI_API_KEY")
    base_url: str | None = Field(None, description="None: the SDK's default endpoint")
    max_input_tokens: int = Field(800_000, description="above this the transcript is split, analyzed in parts, merged")
    attempts: int = Field(5, description="tries of a call (429, 5xx, timeouts retried)")
    timeout_s: float = Field(180.0, description="one request's timeout")


RUN_ROLE = "vibeinsight_run"  # the database role of run Machines (migration 20261204000300_runs_role)


class SupabaseOptions(BaseModel):
    """Supabase's REST API (blocks.status_store.SupabaseStatusStore, blocks.usage_ledger.SupabaseUsageLedger)
    with one of two credentials: the operator's service role key (the worker app: observer, reconcile,
    quota report), or a run token that may only write status rows and book usage (the runs app)."""

    url: str | None = Field(None, description="SUPABASE_URL, https://<ref>.supabase.co")
    service_role_key: SecretStr | None = Field(None, description="operators only; never on a run Machine or a client")
    run_token: SecretStr | None = Field(None, description=f"JWT of the role {RUN_ROLE} (`vibeinsight keys run-token`): "
                                                          "what run Machines hold")
    anon_key: SecretStr | None = Field(None, description="the project's public anon key (RLS limits it to a user's own "
                                                         "rows): the reference page's key, and the `apikey` Supabase's gateway "
                                                         "wants beside a run token")
    timeout_s: float = Field(5.0, description="one REST call's timeout")

    @property
    def has_credential(self) -> bool:
        return bool(self.url and (self.service_role_key or self.run_token))

    def auth_headers(self) -> dict[str, str]:
        """`apikey` and `Authorization` of every request: the service role key when set (an operator's
        process), else the run token beside the anon key (the gateway accepts only project keys as apikey;
        PostgREST takes the role from the bearer token)."""
        if self.service_role_key:
            key = self.service_role_key.get_secret_value()
            return {"apikey": key, "Authorization": f"Bearer {key}"}
        if self.run_token:
            if not self.anon_key:
                raise ValueError("SUPABASE_RUN_TOKEN needs SUPABASE_ANON_KEY: Supabase's gateway takes only a "
                                 "project key as apikey")
            return {"apikey": self.anon_key.get_secret_value(),
                    "Authorization": f"Bearer {self.run_token.get_secret_value()}"}
        raise ValueError("no Supabase credential: SUPABASE_SERVICE_ROLE_KEY (operators) or SUPABASE_RUN_TOKEN (runs)")


class DiarizeSettings(BaseSettings):
    """Speakers on a mono mix (vibeinsight.diarization): CAM++ embeddings clustered on the CPU."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_DIARIZE_", extra="ignore", populate_by_name=True)

    # auto: diarize a mono mix (stereo speaker tracks are labelled left/right already); on: the mix
    # of a stereo file too; off: never.
    mode: Literal["auto", "on", "off"] = Field("auto", validation_alias=AliasChoices("VIBEINSIGHT_DIARIZE", "mode"),
                                               description="speakers on a mono mix: auto, on (a failure fails the run), off")
    threshold: float = Field(0.5, gt=0, lt=1, description="cosine similarity above which two voices are one speaker")
    max_speakers: int | None = Field(None, ge=1, description="upper bound when --max-speakers is not given")
    threads: int = Field(0, ge=0, description="onnxruntime threads; 0: the machine's cores")
    # Diarization runs as a task with this timeout: past it, auto mode goes on without speakers.
    timeout_s: float = Field(1800.0, gt=0, description="longest diarization of one recording")


class FlowSettings(BaseSettings):
    """The process-audio flow as a whole."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_FLOW_", extra="ignore")

    # Prefect's flow timeout: a run past it fails (its hooks write the FAILED row) before the Fly
    # worker's max_runtime_s (6 h by default) kills its Machine.
    timeout_s: float = Field(5 * 3600, gt=0, description="longest run of one recording, all stages")


class FanoutSettings(BaseSettings):
    """A long recording's chunks transcribed by several `transcribe-part` runs at once (vibeinsight.fanout)."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_FANOUT_", extra="ignore", populate_by_name=True)

    # Only a deployment's run with the chunks in the S3 bucket fans out; `vibeinsight process` never does.
    mode: Literal["auto", "off"] = Field("auto", validation_alias=AliasChoices("VIBEINSIGHT_FANOUT", "mode"),
                                         description="auto: fan out a long recording over part runs; off: one run")
    # Below this much speech one Machine is sooner: a part pays a Machine start and a model load.
    min_s: float = Field(600.0, ge=0, description="speech (seconds) from which a recording fans out")
    part_s: float = Field(300.0, gt=0, description="audio (seconds) of one part, cut at chunk boundaries")
    max_parts: int = Field(16, ge=1, le=100, description="most parts of one recording (parts grow to fit)")
    poll_s: float = Field(1.0, gt=0, description="how often the parent reads its parts' progress")
    # The parent transcribes the first part itself: no Machine start, no model load elsewhere, and it
    # would idle otherwise. It starts ~30 s before a part Machine does (bench/fan_out.py measures the
    # gap); this much more audio in its share lets the two end together.
    lead_s: float = Field(300.0, ge=0, description="audio (seconds) the parent's own part has beyond the others' share")


class FlyWorkerSettings(BaseSettings):
    """The fly-machines worker's own configuration (its environment, never a pool or run variable):
    the only hosts its FLY_API_TOKEN is sent to, and how often it checks the pool's Machines."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    api_url: str = Field("https://api.machines.dev", validation_alias=AliasChoices("FLY_API_URL", "api_url"),
                         description="Fly's Machines API (http://_api.internal:4280 inside Fly's private network)")
    logs_url: str = Field("https://api.fly.io", validation_alias=AliasChoices("FLY_LOGS_URL", "logs_url"),
                          description="Fly's logs API (GET /api/v1/apps/{app}/logs, what `fly logs` reads)")
    sweep_interval_s: float = Field(60.0, gt=0, validation_alias=AliasChoices("VIBEINSIGHT_FLY_SWEEP_INTERVAL_S",
                                                                              "sweep_interval_s"),
                                    description="seconds between two checks of the pool's Machines (ended runs, "
                                                "Machines past their max_runtime_s)")


class RetrySettings(BaseSettings):
    """Riding out outages of storage (S3) and the status database (vibeinsight.retry.outage_retrying), and
    crashed runs (reconcile-status runs them again)."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_RETRY_", extra="ignore")

    # A fault that passes never needs a person: S3 or PostgreSQL down for up to this long (a restart, a
    # failover) is retried with jittered back-off; past it the call fails (storage_failed, or the writer's own retry).
    outage_budget_s: float = Field(60.0, gt=0, description="how long storage and status-database calls are retried "
                                                           "through an outage (refused connections, timeouts, 5xx)")
    # A run that crashed with its Machine or worker is scheduled again (the same flow run: its session,
    # row and idempotency key) by reconcile-status, this many times; a crash after that ends it for good.
    crash_reruns: int = Field(1, ge=0, description="times reconcile-status runs a crashed flow run again "
                                                   "(0: never; a crash after these ends the session CRASHED)")
    crash_rerun_within_s: float = Field(3600.0, gt=0, description="a crash older than this is left as it is "
                                                                  "(reconcile-status looks back this far)")


class StatusSettings(BaseSettings):
    """The processing_status mirror: where it is written and how often."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_STATUS_", extra="ignore")

    # postgresql://… or sqlite:///…; unset: Supabase when SUPABASE_URL and the key are set, else SQLite.
    url: str | None = Field(None, description="postgresql://… or sqlite:///…; unset: Supabase with its URL and key, "
                                              "else SQLite under VIBEINSIGHT_HOME")
    pg_role: str | None = Field(None, description="SET ROLE with a direct PostgreSQL store, e.g. service_role")
    min_interval_s: float = Field(1.0, description="least time between two writes of a row")
    # The terminal row is retried while the store is down: the hook waits this long for it (the
    # run is over; past it the observer and reconcile-status repair the row), the writer this long.
    final_wait_s: float = Field(30.0, ge=0, description="the state hook's wait for the terminal row")
    final_give_up_s: float = Field(600.0, gt=0, description="the writer retries the terminal row this long")
    terminal_grace_s: float = Field(3.0, description="the observer lets the flow's own hook write the terminal row first")
    reconcile_min_age_s: float = Field(60.0, description="reconcile reads no row updated more recently")
    # A run Pending this long was taken by a worker that died before starting it (a worker starts a
    # run in seconds; a Fly Machine in well under a minute): scheduled again.
    reconcile_pending_after_s: float = Field(300.0, description="a run Pending this long is scheduled again")
    # A PENDING row with no flow run this old is one whose run was never created: FAILED.
    reconcile_orphan_after_s: float = Field(300.0, description="a PENDING row with no run this old is FAILED stale_pending")
    # A state timestamped further ahead of the writer's clock (and the database's) is refused: a
    # forged event or a Machine whose clock runs fast would otherwise outrank every later write.
    max_clock_skew_s: float = Field(60.0, gt=0, description="a state timestamped further ahead of the writer's clock is refused")


class QuotaSettings(BaseSettings):
    """QUOTA area: which plan the report and the guard measure against, and what the guard does."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_QUOTA_", extra="ignore")

    plan: Literal["free", "pro", "team"] = Field("free", description="Supabase plan the report and the guard measure against")
    plan_table: str | None = Field(None, description="supabase-current (the file's default) or design")
    plans_file: Path | None = Field(None, description="the providers file; unset: the package's data/providers.json")
    ledger_url: str | None = Field(None, description="postgresql://… for the ledger; else VIBEINSIGHT_STATUS_URL if "
                                                     "PostgreSQL, else Supabase REST, else SQLite")
    warn_pct: float = Field(80.0, description="alert threshold (% of a limit)")
    limit_pct: float = Field(100.0, description="guard threshold (% of a limit)")
    guard: bool = Field(True, description="compact runs near Supabase's egress or Realtime message quota")
    enforce: bool = Field(True, description="refuse new sessions (quota_exceeded) at a hard limit or the budget")
    # The month's API budget in USD (every provider's booked cost); unset: no budget.
    budget_usd: float | None = Field(None, validation_alias=AliasChoices("VIBEINSIGHT_BUDGET_USD", "budget_usd"),
                                     description="the month's budget across providers; runs are refused past it")
    # Realtime subscribers per session: each status write is one message to each of them.
    subscribers_per_session: int = Field(1, ge=0, description="Realtime subscribers each status write reaches")
    # One user's share of the plan's monthly Supabase egress: past it, that user's new sessions are
    # refused (quota_exceeded) while everyone else's still run.
    user_share_pct: float = Field(25.0, gt=0, le=100, description="one user's share of the plan's monthly Supabase egress")
    # Opus keeps wideband speech down to ~12 kb/s; below that it falls back to narrowband.
    compact_bitrate_kbps: int = Field(12, description="Opus bitrate in compact mode")
    compact_status_interval_s: float = Field(5.0, description="least time between status writes in compact mode")
    # Result documents without indentation (about a third smaller); the guard turns it on.
    compact_results: bool = Field(False, description="result documents without indentation")


class BucketSettings(BaseSettings):
    """How `vibeinsight storage setup` (and the deploy) configures the bucket: CORS and lifecycle."""

    model_config = SettingsConfigDict(env_prefix="VIBEINSIGHT_BUCKET_", extra="ignore")

    # Browsers upload straight to the bucket with presigned URLs: the web app's origins (JSON list).
    # The URL's signature is the authority; CORS only lets those pages read the answers (the ETag).
    cors_origins: list[str] = Field(default_factory=lambda: ["*"], description="origins allowed to upload")
    upload_retention_days: int = Field(30, ge=0, description="uploads are deleted after this many days; 0 keeps them")


class WebSettings(BaseSettings):
    """What `vibeinsight web` hands the reference page (clients/web): only what a browser may know.
    The Supabase project URL and anon key are SUPABASE_URL and SUPABASE_ANON_KEY (SupabaseOptions)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    function_url: str | None = Field(None, validation_alias=AliasChoices("VIBEINSIGHT_FUNCTION_URL", "function_url"),
                                     description="the Edge Function, https://<ref>.supabase.co/functions/v1/process-audio")


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

    home: Path = Field(default_factory=default_home, alias="VIBEINSIGHT_HOME",
                       description="bucket, status db, models, Prefect db, logs")
    # Logs and traces (vibeinsight/logs.py, vibeinsight/tracing.py). LOG_FORMAT: json on Fly Machines and in
    # the image (one JSON object a line), text on a terminal; LOG_LEVEL applies to every logger of a process.
    log_level: str = Field("WARNING", alias="LOG_LEVEL", description="level of every logger of a process")
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT",
                                                description="json: one JSON object a line with the session's trace id")
    # OpenTelemetry spans over OTLP/HTTP; the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME.
    enable_tracing: bool = Field(False, alias="ENABLE_TRACING", description="OpenTelemetry spans over OTLP/HTTP")
    # Backend choice: "auto" uses the cloud service when its settings are present, else local.
    storage_backend: Literal["auto", "local", "s3"] = Field("auto", alias="VIBEINSIGHT_STORAGE",
                                                            description="auto: S3 when FLY_S3_ENDPOINT is set")
    transcriber_backend: Literal["auto", "local", "openai"] = Field("auto", alias="VIBEINSIGHT_TRANSCRIBER",
                                                                    description="auto: OpenAI when OPENAI_API_KEY is set")
    analyzer_backend: Literal["auto", "local", "gemini"] = Field("auto", alias="VIBEINSIGHT_ANALYZER",
                                                                 description="auto: Gemini when its key is set")
    # Prefect global concurrency limit held around every transcription API call, across runs.
    api_concurrency_limit: str = Field("openai-transcribe", alias="VIBEINSIGHT_API_CONCURRENCY_LIMIT",
                                       description="Prefect global concurrency limit across runs")
    price_table: Path | None = Field(None, alias="VIBEINSIGHT_PRICE_TABLE",
                                     description="the providers file for prices; unset: the bundled one")
    # The image holds the joined model outside VIBEINSIGHT_HOME, so a run Machine (an empty home each
    # time) never assembles or downloads it.
    model_dir: Path | None = Field(None, alias="VIBEINSIGHT_MODEL_DIR",
                                   description="where the joined model lives; unset: VIBEINSIGHT_HOME/models")
    # Set by Fly on every Machine: the run's outbound bytes are billed at this region's price.
    fly_region: str | None = Field(None, alias="FLY_REGION", description="set by Fly: prices the run's outbound bytes")

    limits: Limits = Field(default_factory=Limits)
    transcode: TranscodeSettings = Field(default_factory=TranscodeSettings)
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    fallback_s3: FallbackS3Settings = Field(default_factory=FallbackS3Settings)
    supabase: SupabaseSettings = Field(default_factory=SupabaseSettings)
    bucket: BucketSettings = Field(default_factory=BucketSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    diarize: DiarizeSettings = Field(default_factory=DiarizeSettings)
    flow: FlowSettings = Field(default_factory=FlowSettings)
    fanout: FanoutSettings = Field(default_factory=FanoutSettings)
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
