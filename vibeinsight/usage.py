"""Fold the per-call usage of a run into the result document's Usage, with estimated cost."""

from __future__ import annotations

from collections.abc import Iterable

from vibeinsight.pricing import ServiceUsage, cost, load_table, storage_cost
from vibeinsight.schemas import Usage


def build_usage(*, bytes_in: int, bytes_transcoded: int, bytes_out: int, audio_seconds: float,
                services: Iterable[ServiceUsage], storage: str = "local", storage_service: str = "local",
                table: dict | None = None) -> Usage:
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
