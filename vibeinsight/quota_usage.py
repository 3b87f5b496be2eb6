"""A finished result document's usage as usage_events rows (one per kind and service)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from vibeinsight.schemas import ResultDocument

# Which stage a service works in: a run that failed there counts as that service's failure.
SERVICE_STAGE = {"openai": "transcribe", "gemini": "analyze"}


class UsageEvent(BaseModel):
    """One usage_events row (columns as in the usage_events migration)."""

    session_id: str | None = None
    kind: str
    service: str | None = None
    bytes: int = 0
    calls: int = 0
    retries: int = 0
    tokens: int = 0
    audio_seconds: float = 0.0
    cost_usd: float = 0.0
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    meta: dict[str, Any] = Field(default_factory=dict)


def _uuid_or_none(value: str | None) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError):
        return None


def events_from_document(document: dict | ResultDocument, at: datetime | None = None) -> list[UsageEvent]:
    """storage_download (the upload, with the run's audio and outcome), storage_upload (the result)
    and one api_call row per service the run called."""
    doc = document if isinstance(document, ResultDocument) else ResultDocument.model_validate(document)
    u = doc.usage
    at = at or datetime.now(timezone.utc)
    sid = _uuid_or_none(doc.session_id)
    storage_service = "local" if u.storage == "local" else "tigris"
    base: dict[str, Any] = {"session_id": sid, "at": at}
    ident = {} if sid else {"session": doc.session_id}
    events: list[UsageEvent] = []
    failed_stage = doc.error.stage if doc.error else None
    if u.bytes_in or doc.source:
        meta = {**ident, "file": True, "status": doc.status.value, "storage": u.storage,
                "processing_s": round(sum(v for k, v in doc.timings.items() if k != "startup"), 3),
                "confidence": doc.transcript.confidence if doc.transcript else None,
                "error_code": doc.error.code if doc.error else None}
        events.append(UsageEvent(**base, kind="storage_download", service=storage_service,
                                 bytes=u.bytes_in or (getattr(doc.source, "bytes", 0) or 0),
                                 calls=1, audio_seconds=u.audio_seconds, meta=meta))
    if u.bytes_out:
        events.append(UsageEvent(**base, kind="storage_upload", service=storage_service, bytes=u.bytes_out,
                                 calls=1, meta=dict(ident)))
    services = set(u.api_calls) | set(u.bytes_sent) | set(u.retries) | set(u.cost_by_service)
    for svc in sorted(services):
        tokens = {k: v for k, v in u.tokens.items() if k.startswith(svc + "_")}
        ok = not (failed_stage and failed_stage == SERVICE_STAGE.get(svc))
        meta = {**ident, "ok": ok, "tokens": tokens}
        if svc == "openai" and u.audio_minutes_billed:
            meta["audio_minutes_billed"] = u.audio_minutes_billed
        events.append(UsageEvent(**base, kind="api_call", service=svc, bytes=u.bytes_sent.get(svc, 0),
                                 calls=u.api_calls.get(svc, 0), retries=u.retries.get(svc, 0),
                                 tokens=sum(tokens.values()), cost_usd=u.cost_by_service.get(svc, 0.0),
                                 meta=meta))
    return events
