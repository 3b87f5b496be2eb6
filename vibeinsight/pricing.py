"""Estimated API cost from the price table in vibeinsight/data/api_prices.json (one settings file).

Plain logic: usage in, dollars out. Unknown models cost the service's most expensive listed
price, so an estimate errs high rather than silently free.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

DEFAULT_TABLE = Path(__file__).parent / "data" / "api_prices.json"


class ServiceUsage(BaseModel):
    """What one service was asked for during part of a run (merged into schemas.Usage)."""

    service: str
    model: str | None = None
    calls: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    audio_seconds: float = 0.0  # billed audio
    tokens: dict[str, int] = Field(default_factory=dict)  # e.g. {"gemini_input": n, "gemini_output": n}

    def __add__(self, other: "ServiceUsage") -> "ServiceUsage":
        tokens = dict(self.tokens)
        for k, v in other.tokens.items():
            tokens[k] = tokens.get(k, 0) + v
        return ServiceUsage(service=self.service, model=self.model or other.model, calls=self.calls + other.calls,
                            retries=self.retries + other.retries, bytes_sent=self.bytes_sent + other.bytes_sent,
                            bytes_received=self.bytes_received + other.bytes_received,
                            audio_seconds=self.audio_seconds + other.audio_seconds, tokens=tokens)


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
