"""Synthetic usage ledgers for the quota tests and bench (QUOTA area)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

MB = 1_000_000
GB = 1_000_000_000


def at(month: str, day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    y, m = (int(x) for x in month.split("-"))
    return datetime(y, m, day, hour, minute, second, tzinfo=timezone.utc)


def download(month: str, day: int, nbytes: int, minute: int = 0, audio_s: float = 1800.0, service: str = "supabase",
             **meta) -> dict:
    """One processed file: the upload's download, as a run records it. By default served by Supabase
    Storage (the fallback), so every byte is Supabase egress; service="tigris" for the primary."""
    return dict(session_id=str(uuid.uuid4()), kind="storage_download", service=service, bytes=nbytes, calls=1,
                audio_seconds=audio_s, at=at(month, day, 12, minute), meta={"file": True, **meta})


def daily_downloads(month: str, per_day: list[int], files_per_day: int = 1, service: str = "supabase") -> list[dict]:
    """per_day[i] bytes on day i+1, split evenly over files_per_day files."""
    rows = []
    for i, total in enumerate(per_day):
        for f in range(files_per_day):
            rows.append(download(month, i + 1, total // files_per_day, minute=f, service=service))
    return rows


def month_of_events(month: str, n: int, days: int = 30, seed: int = 7) -> list[dict]:
    """n mixed events spread over `days` days (the bench's ledger)."""
    import random

    rnd = random.Random(seed)
    kinds = [("storage_download", "tigris"), ("status_write", "supabase"), ("realtime_message", "supabase"),
             ("api_call", "openai"), ("api_call", "gemini"), ("result_download", "supabase"),
             ("edge_response", "supabase")]
    start = at(month, 1, 0)
    rows = []
    for i in range(n):
        kind, service = kinds[i % len(kinds)]
        t = start + timedelta(seconds=rnd.randrange(days * 86400))
        meta = {"connections": rnd.randrange(1, 150)} if kind == "realtime_message" else (
            {"ok": rnd.random() > 0.05} if kind == "api_call" else {"processing_s": rnd.uniform(20, 120),
                                                                      "confidence": rnd.uniform(0.6, 0.95)})
        rows.append(dict(session_id=str(uuid.uuid4()), kind=kind, service=service,
                         bytes=rnd.randrange(1000, 15 * MB) if kind == "storage_download" else rnd.randrange(200, 4000),
                         calls=1 if kind != "realtime_message" else rnd.randrange(1, 20),
                         retries=int(rnd.random() < 0.02), tokens=rnd.randrange(0, 2000) if service == "gemini" else 0,
                         audio_seconds=rnd.uniform(60, 1800) if kind == "storage_download" else 0.0,
                         cost_usd=round(rnd.uniform(0, 0.01), 6) if kind == "api_call" else 0.0, at=t, meta=meta))
    return rows
