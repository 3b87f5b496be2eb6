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
    """n mixed events over `days` days, across every provider (the bench's ledger): uploads read from
    Tigris (and a few from the Supabase fallback or a local folder), results written and held,
    status writes and Realtime samples on Supabase, API calls, Fly Machine runs and outbound bytes."""
    import random

    rnd = random.Random(seed)
    kinds = [("storage_download", "tigris"), ("storage_upload", "tigris"), ("storage_held", "tigris"),
             ("status_write", "supabase"), ("realtime_message", "supabase"), ("api_call", "openai"),
             ("api_call", "gemini"), ("machine_run", "fly"), ("transfer_out", "fly"), ("result_download", "supabase"),
             ("edge_response", "supabase"), ("storage_download", "supabase"), ("storage_download", "local")]
    sizes = ("performance-2x/4096MB", "performance-4x/8192MB", "shared-cpu-1x/1024MB")
    start = at(month, 1, 0)
    rows = []
    for i in range(n):
        kind, provider = kinds[i % len(kinds)]
        t = start + timedelta(seconds=rnd.randrange(days * 86400))
        meta: dict = {}
        if kind == "realtime_message":
            meta = {"connections": rnd.randrange(1, 150)}
        elif kind == "api_call":
            meta = {"ok": rnd.random() > 0.05}
        elif kind == "storage_download":
            meta = {"processing_s": rnd.uniform(20, 120), "confidence": rnd.uniform(0.6, 0.95)}
        elif kind == "machine_run":
            meta = {"size": sizes[i % len(sizes)], "region": "nrt"}
        rows.append(dict(session_id=str(uuid.uuid4()), kind=kind, service=provider, provider=provider,
                         bytes=rnd.randrange(1000, 15 * MB) if kind.startswith("storage") else rnd.randrange(200, 4000),
                         calls=rnd.randrange(1, 20) if kind in ("realtime_message", "status_write") else 1,
                         retries=int(rnd.random() < 0.02), tokens=rnd.randrange(0, 2000) if provider == "gemini" else 0,
                         audio_seconds=rnd.uniform(60, 1800) if kind == "storage_download" else 0.0,
                         seconds=rnd.uniform(30, 900) if kind == "machine_run" else 0.0,
                         cost_usd=round(rnd.uniform(0, 0.01), 6) if provider in ("openai", "gemini", "fly") else 0.0,
                         at=t, meta=meta))
    return rows
