"""Pick each outside system's block from settings; local implementations by default."""

from __future__ import annotations

from blocks.analyzer import Analyzer, LocalAnalyzer
from blocks.status_store import PostgresStatusStore, SQLiteStatusStore, StatusStore, SupabaseStatusStore
from blocks.storage import LocalBucket, ObjectStorage
from blocks.transcriber import LocalWhisper, Transcriber
from vibeinsight.settings import Settings, get_settings


def storage(settings: Settings | None = None) -> ObjectStorage:
    """S3 (Tigris) when chosen or FLY_S3_ENDPOINT is set, behind a fallback when one is configured."""
    s = settings or get_settings()
    if s.storage_backend == "s3" or (s.storage_backend == "auto" and s.fly_s3_endpoint):
        from blocks.storage import FallbackStorage, S3Bucket

        primary = S3Bucket.from_settings(s)
        if s.fallback_s3_endpoint:
            return FallbackStorage(primary=primary, fallback=S3Bucket.from_settings(s, fallback=True))
        return primary
    return LocalBucket(root=str(s.bucket_dir))


def transcriber(settings: Settings | None = None) -> Transcriber:
    """OpenAI when chosen or OPENAI_API_KEY is set; faster-whisper otherwise."""
    s = settings or get_settings()
    if s.transcriber_backend == "openai" or (s.transcriber_backend == "auto" and s.openai_api_key):
        from blocks.transcriber import OpenAITranscriber

        return OpenAITranscriber.from_settings(s)
    return LocalWhisper.from_settings(s.whisper).model_copy(update={"model_cache": str(s.model_cache)})


def analyzer(settings: Settings | None = None) -> Analyzer:
    """Gemini (beside the local metrics) when chosen or GEMINI_API_KEY / GOOGLE_API_KEY is set."""
    s = settings or get_settings()
    if s.analyzer_backend == "gemini" or (s.analyzer_backend == "auto" and (s.gemini_api_key or s.google_api_key)):
        from blocks.analyzer import GeminiAnalyzer

        return GeminiAnalyzer.from_settings(s)
    return LocalAnalyzer()


def status_store(settings: Settings | None = None) -> StatusStore:
    """VIBEINSIGHT_STATUS_URL=postgresql://… → PostgreSQL; else SUPABASE_URL + service role key → Supabase;
    else the SQLite file under VIBEINSIGHT_HOME."""
    s = settings or get_settings()
    if s.status_url and s.status_url.startswith(("postgresql://", "postgres://")):
        return PostgresStatusStore(url=s.status_url, role=s.status_pg_role)
    if s.status_url and s.status_url.startswith("sqlite:///"):
        return SQLiteStatusStore(path=s.status_url.removeprefix("sqlite:///"))
    if s.supabase_url and s.supabase_service_role_key:
        return SupabaseStatusStore(url=s.supabase_url, service_role_key=s.supabase_service_role_key)
    return SQLiteStatusStore(path=str(s.status_db))


def usage_ledger(settings: Settings | None = None):
    """VIBEINSIGHT_QUOTA_LEDGER_URL, else a PostgreSQL VIBEINSIGHT_STATUS_URL, else usage.db under VIBEINSIGHT_HOME."""
    from blocks.usage_ledger import PostgresUsageLedger, SQLiteUsageLedger

    s = settings or get_settings()
    url = s.quota.ledger_url or s.status_url
    if url and url.startswith(("postgresql://", "postgres://")):
        return PostgresUsageLedger(url=url)
    if url and url.startswith("sqlite:///") and s.quota.ledger_url:
        return SQLiteUsageLedger(path=url.removeprefix("sqlite:///"))
    return SQLiteUsageLedger(path=str(s.home / "usage.db"))


def plans(settings: Settings | None = None, table: str | None = None):
    """Plan limits from VIBEINSIGHT_QUOTA_PLANS_FILE (default vibeinsight/data/plans.json)."""
    from blocks.plans import DEFAULT_FILE, Plans

    s = settings or get_settings()
    return Plans(path=str(s.quota.plans_file or DEFAULT_FILE), table=table or s.quota.plan_table)
