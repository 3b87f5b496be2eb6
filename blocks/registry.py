"""The one place blocks are built: from a saved block document when one exists, else from settings.

Every outside system's block is chosen by the settings (local by default, the cloud service
when its settings are present). When a Prefect API is configured and a document of the chosen
block type is saved under BLOCK_NAME (from the Prefect UI, or `vibeinsight blocks save`), that
document is what runs use, so an edit in the UI takes effect; otherwise the environment fills in.
"""

from __future__ import annotations

import logging
from typing import TypeVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block

from blocks.analyzer import Analyzer, GeminiAnalyzer, LocalAnalyzer
from blocks.plans import Plans
from blocks.status_store import PostgresStatusStore, SQLiteStatusStore, StatusStore, SupabaseStatusStore
from blocks.storage import BucketResultStorage, FallbackStorage, LocalBucket, ObjectStorage, S3Bucket
from blocks.transcriber import LocalWhisper, OpenAITranscriber, Transcriber
from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger, SupabaseUsageLedger, UsageLedger
from vibeinsight.settings import Settings, get_settings

BLOCK_NAME = "vibeinsight"  # the documented name of each saved block document
PG_SCHEMES = ("postgresql://", "postgres://")

log = logging.getLogger("vibeinsight.blocks")
B = TypeVar("B", bound=Block)


class SettingsError(ValueError):
    """A setting names something that does not exist (an unknown URL scheme, say)."""


def _saved_or(block: B) -> B:
    """The saved document of block's type under BLOCK_NAME when a Prefect API has one, else block."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:  # no server to ask (and never start an ephemeral one)
        return block
    try:
        return type(block).load(BLOCK_NAME, validate=True, _sync=True)
    except ValueError:  # "Unable to find block document named …": nothing saved, the environment wins
        return block
    except Exception as exc:  # noqa: BLE001 - the API is down: the environment still runs the pipeline
        log.warning("block %s/%s not loaded (%s); using the environment", type(block).get_block_type_slug(),
                    BLOCK_NAME, exc)
        return block


def build_storage(s: Settings) -> ObjectStorage:
    if s.storage_backend == "s3" or (s.storage_backend == "auto" and s.s3.endpoint):
        primary = S3Bucket(**s.s3.model_dump())
        if s.fallback_s3.endpoint:
            fallback = S3Bucket(**s.fallback_s3.model_dump(), served_as="fallback",
                                service="supabase" if "supabase" in s.fallback_s3.endpoint else "s3")
            return FallbackStorage(primary=primary, fallback=fallback)
        return primary
    return LocalBucket(root=str(s.bucket_dir))


def build_transcriber(s: Settings) -> Transcriber:
    if s.transcriber_backend == "openai" or (s.transcriber_backend == "auto" and s.openai.api_key):
        return OpenAITranscriber(**s.openai.model_dump())
    return LocalWhisper(**s.whisper.model_dump(), model_cache=str(s.model_cache))


def build_analyzer(s: Settings) -> Analyzer:
    if s.analyzer_backend == "gemini" or (s.analyzer_backend == "auto" and s.gemini.api_key):
        return GeminiAnalyzer(**s.gemini.model_dump())
    return LocalAnalyzer()


def build_status_store(s: Settings) -> StatusStore:
    url = s.status.url
    if url and url.startswith(PG_SCHEMES):
        return PostgresStatusStore(url=url, pg_role=s.status.pg_role)
    if url and url.startswith("sqlite:///"):
        return SQLiteStatusStore(path=url.removeprefix("sqlite:///"))
    if url:
        raise SettingsError(f"VIBEINSIGHT_STATUS_URL must be postgresql://… or sqlite:///…, got {url.split(':')[0]}:…")
    if s.supabase.has_credential:
        return SupabaseStatusStore(**s.supabase.model_dump())
    return SQLiteStatusStore(path=str(s.status_db))


def status_provider(s: Settings | None = None) -> str:
    """Who bills the status writes (as Realtime messages and egress): Supabase when the status
    store is Supabase's (its REST API, or its database by a *.supabase.co / *.supabase.com URL),
    else nobody (`local`)."""
    store = build_status_store(s or get_settings())
    if isinstance(store, SupabaseStatusStore):
        return "supabase"
    if isinstance(store, PostgresStatusStore):
        host = urlsplit(store.url.get_secret_value()).hostname
        return "supabase" if host and host.endswith((".supabase.co", ".supabase.com")) else "local"
    return "local"


def build_usage_ledger(s: Settings) -> UsageLedger:
    url = s.quota.ledger_url or s.status.url
    if url and url.startswith(PG_SCHEMES):
        return PostgresUsageLedger(url=url)
    if url and url.startswith("sqlite:///") and s.quota.ledger_url:
        return SQLiteUsageLedger(path=url.removeprefix("sqlite:///"))
    if s.supabase.has_credential:  # production without a DSN: never a file on the Machine
        return SupabaseUsageLedger(**s.supabase.model_dump())
    return SQLiteUsageLedger(path=str(s.home / "usage.db"))


def build_plans(s: Settings, table: str | None = None) -> Plans:
    return Plans(plans_file=s.quota.plans_file, plan_table=table or s.quota.plan_table)


# What runs call: the saved document when there is one, else the block the settings describe.

def storage(settings: Settings | None = None) -> ObjectStorage:
    """S3 (Tigris) when chosen or FLY_S3_ENDPOINT is set, behind a fallback when one is configured."""
    return _saved_or(build_storage(settings or get_settings()))


def transcriber(settings: Settings | None = None) -> Transcriber:
    """OpenAI when chosen or OPENAI_API_KEY is set; faster-whisper otherwise."""
    s = settings or get_settings()
    chosen = _saved_or(build_transcriber(s))
    if isinstance(chosen, LocalWhisper) and not chosen.model_cache:  # this machine's folder, not the saver's
        chosen = chosen.model_copy(update={"model_cache": str(s.model_cache)})
    return chosen


def analyzer(settings: Settings | None = None) -> Analyzer:
    """Gemini (beside the local metrics) when chosen or GEMINI_API_KEY / GOOGLE_API_KEY is set."""
    return _saved_or(build_analyzer(settings or get_settings()))


def status_store(settings: Settings | None = None) -> StatusStore:
    """VIBEINSIGHT_STATUS_URL=postgresql://… → PostgreSQL; sqlite:///… → that file; else SUPABASE_URL +
    the service role key or a run token → Supabase; else the SQLite file under VIBEINSIGHT_HOME."""
    s = settings or get_settings()
    store = _saved_or(build_status_store(s))
    if store.max_clock_skew_s is None:  # the clock check is this environment's, not the saver's
        store = store.model_copy(update={"max_clock_skew_s": s.status.max_clock_skew_s})
    return store


def usage_ledger(settings: Settings | None = None) -> UsageLedger:
    """VIBEINSIGHT_QUOTA_LEDGER_URL, else a PostgreSQL VIBEINSIGHT_STATUS_URL, else Supabase's REST API when
    SUPABASE_URL and the service role key or a run token are set, else usage.db under VIBEINSIGHT_HOME."""
    return _saved_or(build_usage_ledger(settings or get_settings()))


def result_storage(store: ObjectStorage) -> BucketResultStorage | None:
    """Prefect result storage for cached task results in the run's bucket when it is a remote one (S3,
    with its fallback), else None: Prefect's local default, fine where the disk outlives the run.

    Prefect takes only a saved block as a task's result storage: the document under BLOCK_NAME holds
    the key prefix alone, never a credential; the first run on a server saves it."""
    if isinstance(store, LocalBucket):
        return None
    from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

    for _ in range(3):
        try:
            return BucketResultStorage.load(BLOCK_NAME, _sync=True).bind(store)
        except ValueError:  # not saved yet
            pass
        try:
            block = BucketResultStorage()
            block.save(BLOCK_NAME, _sync=True)
            return block.bind(store)
        # A run starting at the same time saved it (or registered its type) first: load that. Prefect
        # says so with ValueError (the name), ObjectAlreadyExists or a 409 (the type).
        except (ValueError, ObjectAlreadyExists, PrefectHTTPStatusError):
            continue
    raise RuntimeError(f"cannot save or load the result storage block {BLOCK_NAME!r}")


def plans(settings: Settings | None = None, table: str | None = None) -> Plans:
    """Plan limits and prices from VIBEINSIGHT_QUOTA_PLANS_FILE (default vibeinsight/data/providers.json)."""
    return _saved_or(build_plans(settings or get_settings(), table))


def save_all(settings: Settings | None = None, overwrite: bool = True) -> dict[str, str]:
    """Save the blocks the settings describe under BLOCK_NAME; returns {role: block type slug}."""
    s = settings or get_settings()
    built = {"storage": build_storage(s), "transcriber": build_transcriber(s), "analyzer": build_analyzer(s),
             "status_store": build_status_store(s), "usage_ledger": build_usage_ledger(s), "plans": build_plans(s)}
    if isinstance(built["transcriber"], LocalWhisper):  # a folder of this machine: each runner fills in its own
        built["transcriber"] = built["transcriber"].model_copy(update={"model_cache": None})
    for block in built.values():
        block.save(BLOCK_NAME, overwrite=overwrite)
    return {role: block.get_block_type_slug() for role, block in built.items()}
