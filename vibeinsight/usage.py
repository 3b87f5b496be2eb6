"""Usage and its price, in one place: what one service was asked for (ServiceUsage), what a run
moved and spent (Usage, the result document's `usage`), what it cost (the price table in
vibeinsight/data/api_prices.json) and the usage_events rows the quota ledger stores.

Plain logic: usage in, dollars and rows out. Unknown models cost the service's most expensive
listed price, so an estimate errs high rather than silently free.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from vibeinsight.schemas import ResultDocument

DEFAULT_TABLE = Path(__file__).parent / "data" / "api_prices.json"
# Which stage a service works in: a run that failed there counts as that service's failure.
SERVICE_STAGE = {"openai": "transcribe", "gemini": "analyze"}


class ServiceUsage(BaseModel):
    """What one service was asked for during part of a run (merged into Usage)."""

    service: str
    model: str | None = None
    calls: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    audio_seconds: float = 0.0  # billed audio
    tokens: dict[str, int] = Field(default_factory=dict)  # e.g. {"gemini_input": n, "gemini_output": n}

    def __add__(self, other: ServiceUsage) -> ServiceUsage:
        tokens = dict(self.tokens)
        for k, v in other.tokens.items():
            tokens[k] = tokens.get(k, 0) + v
        return ServiceUsage(service=self.service, model=self.model or other.model, calls=self.calls + other.calls,
                            retries=self.retries + other.retries, bytes_sent=self.bytes_sent + other.bytes_sent,
                            bytes_received=self.bytes_received + other.bytes_received,
                            audio_seconds=self.audio_seconds + other.audio_seconds, tokens=tokens)


class Usage(BaseModel):
    """What a run moved and spent: the result document's usage, and the quota ledger's input."""

    bytes_in: int = Field(0, description="upload bytes read from storage")
    bytes_transcoded: int = Field(0, description="compact audio produced by transcode")
    bytes_out: int = Field(0, description="bytes written to storage (results)")
    bytes_sent: dict[str, int] = Field(default_factory=dict, description="bytes sent to each API service")
    api_calls: dict[str, int] = Field(default_factory=dict, description="requests per service")
    retries: dict[str, int] = Field(default_factory=dict, description="retried requests per service")
    audio_seconds: float = 0.0
    audio_minutes_billed: float = 0.0
    tokens: dict[str, int] = Field(default_factory=dict, description="e.g. gemini_input, gemini_output")
    cost_usd: float = 0.0
    cost_by_service: dict[str, float] = Field(default_factory=dict)
    storage: str = Field("local", description="which storage served the run: local, primary or fallback")


# --- prices ---

@lru_cache(maxsize=4)
def load_table(path: Path | None = None) -> dict:
    return json.loads((path or DEFAULT_TABLE).read_text())


def _price(prices: dict[str, float], model: str | None) -> float:
    return prices.get(model or "", max(prices.values(), default=0.0))


def cost(u: ServiceUsage, table: dict | None = None) -> float:
    """USD for one service's usage."""
    t = (table or load_table()).get(u.service)
    if not t:
        return 0.0
    usd = 0.0
    if "per_audio_minute" in t:
        usd += u.audio_seconds / 60.0 * _price(t["per_audio_minute"], u.model)
    if "per_million_input_tokens" in t:
        usd += u.tokens.get(f"{u.service}_input", 0) / 1e6 * _price(t["per_million_input_tokens"], u.model)
        usd += u.tokens.get(f"{u.service}_output", 0) / 1e6 * _price(t["per_million_output_tokens"], u.model)
    return usd


def storage_cost(service: str, puts: int, gets: int, egress_bytes: int, table: dict | None = None) -> float:
    t = (table or load_table()).get(service) or {}
    return (puts / 1000 * t.get("per_1000_put", 0.0) + gets / 1000 * t.get("per_1000_get", 0.0)
            + egress_bytes / 1e9 * t.get("per_gb_egress", 0.0))


# --- a run's usage ---

def build_usage(*, bytes_in: int, bytes_transcoded: int, bytes_out: int, audio_seconds: float,
                services: Iterable[ServiceUsage], storage: str = "local", storage_service: str = "local",
                table: dict | None = None) -> Usage:
    """Fold the per-call usage of a run into the result document's Usage, with estimated cost."""
    table = table or load_table()
    merged: dict[str, ServiceUsage] = {}
    for u in services:
        if u.service == "local" or not (u.calls or u.retries or u.bytes_sent or u.tokens):
            continue  # local work and cache hits cost nothing and call nobody
        merged[u.service] = merged[u.service] + u if u.service in merged else u
    usage = Usage(bytes_in=bytes_in, bytes_transcoded=bytes_transcoded, bytes_out=bytes_out,
                  audio_seconds=round(audio_seconds, 3), storage=storage)
    for name, u in merged.items():
        usage.bytes_sent[name] = u.bytes_sent
        usage.api_calls[name] = u.calls
        usage.retries[name] = u.retries
        usage.audio_minutes_billed = round(usage.audio_minutes_billed + u.audio_seconds / 60.0, 4)
        for k, v in u.tokens.items():
            usage.tokens[k] = usage.tokens.get(k, 0) + v
        usage.cost_by_service[name] = round(cost(u, table), 6)
    if storage_service != "local":  # one GET of the upload, one PUT of the result
        usage.api_calls[storage_service] = usage.api_calls.get(storage_service, 0) + 2
        usage.bytes_sent[storage_service] = usage.bytes_sent.get(storage_service, 0) + bytes_out
        usage.cost_by_service[storage_service] = round(storage_cost(storage_service, 1, 1, bytes_in, table), 6)
    usage.cost_usd = round(sum(usage.cost_by_service.values()), 6)
    return usage


# --- the ledger's rows ---

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


def events_from_document(document: dict | ResultDocument, at: datetime | None = None,
                         status_writes: tuple[int, int] = (0, 0)) -> list[UsageEvent]:
    """storage_download (the upload, with the run's audio and outcome), storage_upload (the result),
    one api_call row per service the run called, and status_write (writes, payload bytes) when any."""
    from vibeinsight.schemas import ResultDocument

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
    writes, nbytes = status_writes
    if writes and events:
        # Each status write reaches the session's subscriber as one Realtime message. Counted
        # before the terminal write, which the state hook makes after the flow body returns.
        events.append(UsageEvent(**base, kind="status_write", service="realtime", calls=writes, bytes=nbytes,
                                 meta=dict(ident)))
    return events
