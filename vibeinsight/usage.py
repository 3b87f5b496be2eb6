"""Usage and its price, in one place: what one service was asked for (ServiceUsage), what a run
moved and spent (Usage, the result document's `usage`), what it cost (the providers file
vibeinsight/data/providers.json) and the usage_events rows the quota ledger stores.

Every ledger row names the provider that bills it (PROVIDERS) and carries what that provider
bills: bytes out, bytes stored, requests, Machine seconds by size, tokens, audio seconds.

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

from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:
    from vibeinsight.schemas import ResultDocument

DEFAULT_TABLE = Path(__file__).parent / "data" / "providers.json"
# Which stage a service works in: a run that failed there counts as that service's failure.
SERVICE_STAGE = {"openai": "transcribe", "gemini": "analyze"}
# Who bills a ledger row. `other` is any further S3 endpoint (a fallback that is not Supabase).
PROVIDERS = ("supabase", "tigris", "fly", "openai", "gemini", "local", "other")
_PROVIDER_OF = {"supabase": "supabase", "realtime": "supabase", "tigris": "tigris", "fly": "fly",
                "openai": "openai", "gemini": "gemini", "local": "local"}
STORAGE_PROVIDERS = ("tigris", "supabase", "local", "other")


def provider_of(service: str | None) -> str:
    """The provider that bills what a service name stands for (realtime is Supabase's)."""
    return _PROVIDER_OF.get(service or "local", "other")


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
    failed: int = 0  # calls that ended in an error (retried or not): billed or not, they count
    gave_up: bool = False  # the service's work failed for good though the run went on (a degraded analysis)

    def __add__(self, other: ServiceUsage) -> ServiceUsage:
        tokens = dict(self.tokens)
        for k, v in other.tokens.items():
            tokens[k] = tokens.get(k, 0) + v
        return ServiceUsage(service=self.service, model=self.model or other.model, calls=self.calls + other.calls,
                            retries=self.retries + other.retries, bytes_sent=self.bytes_sent + other.bytes_sent,
                            bytes_received=self.bytes_received + other.bytes_received,
                            audio_seconds=self.audio_seconds + other.audio_seconds, tokens=tokens,
                            failed=self.failed + other.failed, gave_up=self.gave_up or other.gave_up)


class Usage(BaseModel):
    """What a run moved and spent: the result document's usage, and the quota ledger's input."""

    bytes_in: int = Field(0, description="upload bytes read from storage")
    bytes_transcoded: int = Field(0, description="compact audio produced by transcode")
    bytes_out: int = Field(0, description="bytes written to storage (results)")
    bytes_sent: dict[str, int] = Field(default_factory=dict, description="bytes sent to each API service")
    api_calls: dict[str, int] = Field(default_factory=dict, description="requests per service")
    retries: dict[str, int] = Field(default_factory=dict, description="retried requests per service")
    failed_calls: dict[str, int] = Field(default_factory=dict, description="requests per service that ended in an error")
    failed_services: list[str] = Field(default_factory=list, description="services whose work failed for good while the run went on")
    audio_seconds: float = 0.0
    audio_minutes_billed: float = 0.0
    tokens: dict[str, int] = Field(default_factory=dict, description="e.g. gemini_input, gemini_output")
    cost_usd: float = 0.0
    cost_by_service: dict[str, float] = Field(default_factory=dict)
    storage: str = Field("local", description="which storage served the run: local, primary or fallback")
    download_provider: str | None = Field(None, description="provider that served the upload (tigris, supabase, local)")
    upload_provider: str | None = Field(None, description="provider the result was written to")


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
                  audio_seconds=round(audio_seconds, 3), storage=storage,
                  download_provider=provider_of(storage_service), upload_provider=provider_of(storage_service))
    for name, u in merged.items():
        usage.bytes_sent[name] = u.bytes_sent
        usage.api_calls[name] = u.calls
        usage.retries[name] = u.retries
        if u.failed:
            usage.failed_calls[name] = u.failed
        if u.gave_up:
            usage.failed_services.append(name)
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


# --- Fly: Machine seconds and outbound transfer ---

def _figure(table: dict, provider: str, key: str) -> Any:
    value = table[provider][key]
    return value["value"] if isinstance(value, dict) and "value" in value else value


def machine_size(cpu_kind: str, cpus: int, memory_mb: int) -> str:
    """Fly's preset name and the RAM, e.g. performance-2x/4096MB."""
    kind = "shared-cpu" if cpu_kind == "shared" else "performance"
    return f"{kind}-{cpus}x/{memory_mb}MB"


def machine_usd_per_second(cpu_kind: str, cpus: int, memory_mb: int, region: str | None = None,
                           table: dict | None = None) -> float:
    """Fly's price of a started Machine: the CPUs of their kind, RAM above the CPUs' included share,
    times the region's markup (regions not in the table: the dearest listed markup, erring high)."""
    t = table or load_table()
    kind = "shared" if cpu_kind == "shared" else "performance"
    extra_gib = max(0.0, memory_mb / 1024 - cpus * _figure(t, "fly", "included_ram_gib_per_vcpu")[kind])
    base = cpus * _figure(t, "fly", "vcpu_usd_per_second")[kind] + extra_gib * _figure(t, "fly", "ram_usd_per_gib_second")
    markups = _figure(t, "fly", "region_markup")
    region = region or t["fly"].get("default_region", "iad")
    return base * markups.get(region, max(markups.values()))


def fly_outbound_usd_per_gb(region: str | None = None, table: dict | None = None) -> float:
    t = table or load_table()
    region = region or t["fly"].get("default_region", "iad")
    group = _figure(t, "fly", "region_group").get(region, "na_eu")
    return _figure(t, "fly", "outbound_usd_per_gb")[group]


# --- the ledger's rows ---

class UsageEvent(BaseModel):
    """One usage_events row (columns as in the usage_events migrations). `provider` bills it; when a
    writer gives only the service, the provider follows from it (provider_of)."""

    session_id: str | None = None
    kind: str
    service: str | None = None
    provider: str | None = None
    bytes: int = 0
    calls: int = 0
    retries: int = 0
    tokens: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0  # Machine seconds (kind machine_run)
    cost_usd: float = 0.0
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _billing_provider(self) -> UsageEvent:
        self.provider = self.provider or provider_of(self.service)
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        return self


def _uuid_or_none(value: str | None) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError):
        return None


def machine_run_event(*, session_id: str | None, flow_run_id: str | None, cpu_kind: str, cpus: int, memory_mb: int,
                      seconds: float, region: str | None = None, machine_id: str | None = None,
                      at: datetime | None = None, table: dict | None = None) -> UsageEvent:
    """The `fly` row of one Machine run: its seconds, size and price (what the fly-machines worker books)."""
    usd = machine_usd_per_second(cpu_kind, cpus, memory_mb, region, table)
    sid = _uuid_or_none(session_id)
    meta: dict[str, Any] = {"size": machine_size(cpu_kind, cpus, memory_mb), "region": region,
                            "machine_id": machine_id, "flow_run_id": flow_run_id, "usd_per_second": usd}
    if not sid and session_id:
        meta["session"] = session_id
    return UsageEvent(session_id=sid, kind="machine_run", service="fly", provider="fly", calls=1,
                      seconds=round(max(0.0, seconds), 3), cost_usd=round(max(0.0, seconds) * usd, 6),
                      at=at or datetime.now(timezone.utc), meta=meta)


def events_from_document(document: dict | ResultDocument, at: datetime | None = None,
                         status_writes: tuple[int, int] = (0, 0), *, status_provider: str = "local",
                         subscribers: int = 1, fly_region: str | None = None,
                         table: dict | None = None) -> list[UsageEvent]:
    """A run's ledger rows, each booked to the provider that bills it:

    - storage_download (the upload, with the run's audio and outcome) and storage_upload (the
      result) to the storage that served them: Tigris (no egress charge), Supabase (the fallback:
      Supabase egress) or local; storage_held, the bytes they keep, to the same providers;
    - one api_call row per API service (openai, gemini) with calls, retries, tokens and cost;
    - status_write: each status write reaches each subscriber of the session as one Realtime
      message (`subscribers`, one per session unless told), booked to Supabase when the status
      store is Supabase's (`status_provider`), else local;
    - transfer_out: on a Fly Machine (`fly_region`), the bytes that left it for the APIs and
      Supabase, at Fly's outbound price for the region (Tigris traffic is free).
    """
    from vibeinsight.schemas import ResultDocument

    table = table or load_table()
    doc = document if isinstance(document, ResultDocument) else ResultDocument.model_validate(document)
    u = doc.usage
    at = at or datetime.now(timezone.utc)
    sid = _uuid_or_none(doc.session_id)
    down = u.download_provider or ("local" if u.storage == "local" else "tigris")
    up = u.upload_provider or down
    base: dict[str, Any] = {"session_id": sid, "at": at}
    ident = {} if sid else {"session": doc.session_id}
    if doc.user_id:  # the quota guard's per-user share sums a user's rows by it
        ident["user_id"] = doc.user_id
    events: list[UsageEvent] = []
    failed_stage = doc.error.stage if doc.error else None
    upload_bytes = u.bytes_in or (getattr(doc.source, "bytes", 0) or 0)
    if u.bytes_in or doc.source:
        meta = {**ident, "file": True, "status": doc.status.value, "storage": u.storage,
                "processing_s": round(sum(v for k, v in doc.timings.items() if k != "startup"), 3),
                "confidence": doc.transcript.confidence if doc.transcript else None,
                "error_code": doc.error.code if doc.error else None}
        events.append(UsageEvent(**base, kind="storage_download", service=down, provider=down, bytes=upload_bytes,
                                 calls=1, audio_seconds=u.audio_seconds, meta=meta))
    if u.bytes_out:
        events.append(UsageEvent(**base, kind="storage_upload", service=up, provider=up, bytes=u.bytes_out,
                                 calls=1, meta=dict(ident)))
    held: dict[str, int] = {}
    for provider, nbytes in ((down, upload_bytes), (up, u.bytes_out)):
        if nbytes and provider != "local":
            held[provider] = held.get(provider, 0) + nbytes
    for provider, nbytes in held.items():  # the pipeline deletes nothing: the bytes stay stored
        events.append(UsageEvent(**base, kind="storage_held", service=provider, provider=provider, bytes=nbytes,
                                 meta=dict(ident)))
    services = set(u.api_calls) | set(u.bytes_sent) | set(u.retries) | set(u.cost_by_service)
    for svc in sorted(s for s in services if provider_of(s) not in STORAGE_PROVIDERS):
        tokens = {k: v for k, v in u.tokens.items() if k.startswith(svc + "_")}
        ok = not (failed_stage and failed_stage == SERVICE_STAGE.get(svc)) and svc not in u.failed_services
        meta = {**ident, "ok": ok, "tokens": tokens, "failed_calls": u.failed_calls.get(svc, 0)}
        billed_s = 0.0
        if svc == "openai" and u.audio_minutes_billed:
            meta["audio_minutes_billed"] = u.audio_minutes_billed
            billed_s = round(u.audio_minutes_billed * 60, 3)
        events.append(UsageEvent(**base, kind="api_call", service=svc, bytes=u.bytes_sent.get(svc, 0),
                                 calls=u.api_calls.get(svc, 0), retries=u.retries.get(svc, 0),
                                 tokens=sum(tokens.values()), audio_seconds=billed_s,
                                 cost_usd=u.cost_by_service.get(svc, 0.0), meta=meta))
    writes, nbytes = status_writes
    if writes and events:
        # Counted before the terminal write, which the state hook makes after the flow body returns.
        events.append(UsageEvent(**base, kind="status_write", service="realtime", provider=status_provider,
                                 calls=writes * subscribers, bytes=nbytes * subscribers,
                                 meta={**ident, "writes": writes, "subscribers": subscribers}))
    if fly_region and events:
        out = sum(e.bytes for e in events if e.kind == "api_call")
        out += sum(e.bytes for e in events if e.kind == "storage_upload" and e.provider not in ("tigris", "local"))
        out += nbytes if status_provider == "supabase" else 0
        if out:
            events.append(UsageEvent(**base, kind="transfer_out", service="fly", provider="fly", bytes=out,
                                     cost_usd=round(out / 1e9 * fly_outbound_usd_per_gb(fly_region, table), 8),
                                     meta={**ident, "region": fly_region}))
    return events
