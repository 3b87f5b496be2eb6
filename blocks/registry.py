"""Pick each outside system's block from settings; local implementations by default."""

from __future__ import annotations

from blocks.analyzer import Analyzer, LocalAnalyzer
from blocks.status_store import SQLiteStatusStore, StatusStore
from blocks.storage import LocalBucket, ObjectStorage
from blocks.transcriber import LocalWhisper, Transcriber
from vibeinsight.settings import Settings, get_settings


def storage(settings: Settings | None = None) -> ObjectStorage:
    s = settings or get_settings()
    return LocalBucket(root=str(s.bucket_dir))


def transcriber(settings: Settings | None = None) -> Transcriber:
    s = settings or get_settings()
    return LocalWhisper.from_settings(s.whisper).model_copy(update={"model_cache": str(s.model_cache)})


def analyzer(settings: Settings | None = None) -> Analyzer:
    return LocalAnalyzer()


def status_store(settings: Settings | None = None) -> StatusStore:
    s = settings or get_settings()
    return SQLiteStatusStore(path=str(s.status_db))
