"""The usage_events ledger and the quota_alerts rows: SQLite by default, PostgreSQL when configured,
Supabase's REST API when only SUPABASE_URL and the service role key are.

The SQL ledgers share every query; they differ only in how they connect, the placeholder style and
how a timestamp becomes a day. The Supabase ledger sends the same rows to the same tables through
PostgREST RPC (functions of migration 20261129000400, the same rules in SQL), because a run Machine's
disk does not outlive it: a SQLite file there would hide every run from the report and the guard.
The PostgreSQL tables come from the migrations in infra/supabase/migrations; the SQLite twins are
created here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from vibeinsight.quota import (
    COLUMNS,
    DAILY_TOTALS,
    EGRESS_KINDS,
    META_FIELDS,
    META_KINDS,
    REALTIME_KINDS,
    concat_frames,
    to_frame,
)
from vibeinsight.settings import SupabaseOptions
from vibeinsight.usage import UsageEvent

if TYPE_CHECKING:
    import pandas as pd  # only the report reads events as a frame

_EVENT_COLS = ("session_id", "kind", "service", "provider", "bytes", "calls", "retries", "tokens", "audio_seconds",
               "seconds", "cost_usd", "at", "meta")
READ_BATCH = 100_000
_ALERT_COLS = ("month", "plan", "metric", "basis", "level", "value", "limit_value", "pct", "message",
               "flow_run_id")


class UsageLedger(Block):
    """Append usage events, read a period back as a frame, keep quota alerts operators can query."""

    _block_type_name = "VibeInsight Usage Ledger"

    @abstractmethod
    def record(self, events: Iterable[UsageEvent | dict]) -> int:
        ...

    @abstractmethod
    def events(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Events with start <= at < end, typed, with the meta fields the report reads (vibeinsight.quota.to_frame)."""

    @abstractmethod
    def daily_egress(self, start: datetime, end: datetime) -> dict[str, int]:
        """Supabase egress bytes per UTC day ('YYYY-MM-DD'), summed by the store."""

    @abstractmethod
    def daily_totals(self, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
        """Per UTC day, summed by the store (the guard's cheap read at the start of every run):
        Supabase egress bytes, Realtime messages, booked cost in USD and sessions (DAILY_TOTALS)."""

    @abstractmethod
    def record_alerts(self, alerts: list[dict], month: str, plan: str, flow_run_id: str | None = None) -> int:
        """Upsert one row per (month, plan, metric, basis, level): first_seen_at stays, last_seen_at moves."""

    @abstractmethod
    def alerts(self, month: str | None = None) -> list[dict]:
        ...

    @staticmethod
    def _events(events: Iterable[UsageEvent | dict]) -> list[UsageEvent]:
        return [e if isinstance(e, UsageEvent) else UsageEvent(**e) for e in events]

    @staticmethod
    def _alert_rows(alerts: list[dict], month: str, plan: str, flow_run_id: str | None) -> list[dict]:
        return [{"month": month, "plan": plan, "metric": a["metric"], "basis": a["basis"], "level": a["level"],
                 "value": float(a["value"]), "limit_value": float(a["limit"]), "pct": float(a["pct"]),
                 "message": a["message"], "flow_run_id": flow_run_id} for a in alerts]


class SQLUsageLedger(UsageLedger):
    """The ledger in a SQL database this process connects to."""

    _block_type_name = "VibeInsight SQL Usage Ledger"
    _p: ClassVar[str] = "?"

    @abstractmethod
    def _conn(self):  # context manager yielding a DB-API connection
        ...

    def _select(self, column: str) -> str:
        return column

    @abstractmethod
    def _meta(self, key: str) -> str:
        """SQL that reads one top-level field of meta."""

    @abstractmethod
    def _day(self, column: str) -> str:
        """SQL that turns a timestamp column into 'YYYY-MM-DD' (UTC)."""

    def _encode(self, event: UsageEvent) -> tuple:
        d = event.model_dump()
        return tuple(self._value(c, d[c]) for c in _EVENT_COLS)

    def _value(self, column: str, value: Any) -> Any:
        if column == "meta":
            return json.dumps(value, ensure_ascii=False, default=str)
        if column == "at":
            return value.astimezone(timezone.utc).isoformat()
        return value

    def record(self, events: Iterable[UsageEvent | dict]) -> int:
        rows = [self._encode(e) for e in self._events(events)]
        if not rows:
            return 0
        marks = ", ".join([self._p] * len(_EVENT_COLS))
        with self._conn() as conn:
            cur = conn.cursor()
            cur.executemany(f"INSERT INTO usage_events ({', '.join(_EVENT_COLS)}) VALUES ({marks})", rows)
            conn.commit()
        return len(rows)

    def events(self, start: datetime, end: datetime) -> pd.DataFrame:
        cols = [*(self._select(c) for c in COLUMNS), *(self._meta_of(k) for k in META_FIELDS)]
        sql = (f"SELECT {', '.join(cols)} FROM usage_events WHERE at >= {self._p} AND at < {self._p} "
               "ORDER BY at")
        frames = []
        with self._conn() as conn:
            cur = self._stream(conn)
            cur.execute(sql, (self._value("at", start), self._value("at", end)))
            # In batches: a million rows never sit in memory as a million tuples of Python objects.
            while batch := cur.fetchmany(READ_BATCH):
                frames.append(to_frame(batch))
        return concat_frames(frames)

    def _stream(self, conn):
        """A cursor for reading many rows."""
        return conn.cursor()

    def _meta_of(self, key: str) -> str:
        """One meta field, parsed only on the rows of the kinds that carry it (JSON parsing is the read's cost)."""
        kinds = META_KINDS.get(key)
        if not kinds:
            return self._meta(key)
        return f"CASE WHEN kind IN ({', '.join(repr(k) for k in kinds)}) THEN {self._meta(key)} END"

    def daily_egress(self, start: datetime, end: datetime) -> dict[str, int]:
        """Supabase egress bytes per UTC day ('YYYY-MM-DD'): only bytes Supabase bills."""
        return {day: t["supabase_egress_bytes"] for day, t in self.daily_totals(start, end).items()}

    def daily_totals(self, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
        egress = ", ".join(f"'{k}'" for k in EGRESS_KINDS)
        realtime = ", ".join(f"'{k}'" for k in REALTIME_KINDS)
        sql = (f"SELECT {self._day('at')} AS day, "
               f"SUM(CASE WHEN provider = 'supabase' AND kind IN ({egress}) THEN bytes ELSE 0 END), "
               f"SUM(CASE WHEN provider = 'supabase' AND kind IN ({realtime}) THEN calls ELSE 0 END), "
               "SUM(cost_usd), COUNT(DISTINCT CASE WHEN kind = 'storage_download' THEN session_id END) "
               f"FROM usage_events WHERE at >= {self._p} AND at < {self._p} GROUP BY 1 ORDER BY 1")
        with self._conn() as conn:
            cur = conn.cursor()
            cur.execute(sql, (self._value("at", start), self._value("at", end)))
            return {str(row[0]): {k: float(v or 0) for k, v in zip(DAILY_TOTALS, row[1:], strict=True)}
                    for row in cur.fetchall()}

    def user_egress(self, start: datetime, end: datetime, user_id: str) -> int:
        """One user's Supabase-billed egress bytes (rows whose meta.user_id is theirs): the guard's
        per-user share."""
        egress = ", ".join(f"'{k}'" for k in EGRESS_KINDS)
        sql = (f"SELECT SUM(bytes) FROM usage_events WHERE at >= {self._p} AND at < {self._p} "
               f"AND provider = 'supabase' AND kind IN ({egress}) AND {self._meta('user_id')} = {self._p}")
        with self._conn() as conn:
            cur = conn.cursor()
            cur.execute(sql, (self._value("at", start), self._value("at", end), user_id))
            (total,) = cur.fetchone()
            return int(total or 0)

    def record_alerts(self, alerts: list[dict], month: str, plan: str, flow_run_id: str | None = None) -> int:
        if not alerts:
            return 0
        now = datetime.now(timezone.utc).isoformat()
        rows = [(*(r[c] for c in _ALERT_COLS), now, now) for r in self._alert_rows(alerts, month, plan, flow_run_id)]
        marks = ", ".join([self._p] * (len(_ALERT_COLS) + 2))
        sql = (f"INSERT INTO quota_alerts ({', '.join(_ALERT_COLS)}, first_seen_at, last_seen_at) VALUES ({marks}) "
               "ON CONFLICT (month, plan, metric, basis, level) DO UPDATE SET value = excluded.value, "
               "limit_value = excluded.limit_value, pct = excluded.pct, message = excluded.message, "
               "flow_run_id = excluded.flow_run_id, last_seen_at = excluded.last_seen_at")
        with self._conn() as conn:
            cur = conn.cursor()
            cur.executemany(sql, rows)
            conn.commit()
        return len(rows)

    def alerts(self, month: str | None = None) -> list[dict]:
        cols = (*_ALERT_COLS, "first_seen_at", "last_seen_at")
        sql = f"SELECT {', '.join(cols)} FROM quota_alerts"
        params: tuple = ()
        if month:
            sql += f" WHERE month = {self._p}"
            params = (month,)
        with self._conn() as conn:
            cur = conn.cursor()
            cur.execute(sql + " ORDER BY month, metric, basis, level", params)
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# The twin of the usage_events migrations (20261129000200 and 20261129000500_usage_providers).
_SQLITE_EVENTS = """
CREATE TABLE IF NOT EXISTS {name} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    TEXT,
    kind          TEXT NOT NULL CHECK (kind IN ('storage_download','storage_upload','storage_held','api_call',
                                               'edge_response','realtime_message','status_write',
                                               'result_download','machine_run','transfer_out')),
    service       TEXT,
    provider      TEXT NOT NULL CHECK (provider IN ('supabase','tigris','fly','openai','gemini','local','other')),
    bytes         INTEGER NOT NULL DEFAULT 0,
    calls         INTEGER NOT NULL DEFAULT 0,
    retries       INTEGER NOT NULL DEFAULT 0,
    tokens        INTEGER NOT NULL DEFAULT 0,
    audio_seconds REAL NOT NULL DEFAULT 0,
    seconds       REAL NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    meta          TEXT NOT NULL DEFAULT '{{}}'
);
"""
# A usage.db from before providers: SQLite cannot change a CHECK, so the table is rebuilt once,
# each old row's provider following from its service (as the PostgreSQL migration does).
_SQLITE_UPGRADE = _SQLITE_EVENTS.format(name="usage_events_new") + """
INSERT INTO usage_events_new (id, session_id, kind, service, provider, bytes, calls, retries, tokens, audio_seconds,
                              cost_usd, at, meta)
SELECT id, session_id, kind, service,
       CASE WHEN service IN ('supabase','realtime') THEN 'supabase'
            WHEN service IN ('tigris','fly','openai','gemini','local') THEN service
            WHEN service IS NULL THEN 'local' ELSE 'other' END,
       bytes, calls, retries, tokens, audio_seconds, cost_usd, at, meta FROM usage_events;
DROP TABLE usage_events;
ALTER TABLE usage_events_new RENAME TO usage_events;
"""
_SQLITE_SCHEMA = _SQLITE_EVENTS.format(name="usage_events") + """
CREATE INDEX IF NOT EXISTS usage_events_at ON usage_events (at);
CREATE TABLE IF NOT EXISTS quota_alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    month         TEXT NOT NULL,
    plan          TEXT NOT NULL,
    metric        TEXT NOT NULL,
    basis         TEXT NOT NULL CHECK (basis IN ('now','forecast')),
    level         TEXT NOT NULL CHECK (level IN ('warning','exceeded')),
    value         REAL NOT NULL,
    limit_value   REAL NOT NULL,
    pct           REAL NOT NULL,
    message       TEXT NOT NULL,
    flow_run_id   TEXT,
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    UNIQUE (month, plan, metric, basis, level)
);
"""


class SQLiteUsageLedger(SQLUsageLedger):
    """The embedded default: usage.db under VIBEINSIGHT_HOME. Timestamps are ISO-8601 UTC text,
    so comparing them as text orders them in time."""

    _block_type_name = "VibeInsight SQLite Usage Ledger"
    _p: ClassVar[str] = "?"

    path: str = Field(description="SQLite database file")

    @contextmanager
    def _conn(self):
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with _sqlite_lock:
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                columns = {r[1] for r in conn.execute("PRAGMA table_info(usage_events)")}
                if columns and "provider" not in columns:
                    conn.executescript(f"BEGIN; {_SQLITE_UPGRADE} COMMIT;")
                conn.executescript(_SQLITE_SCHEMA)
                yield conn
            finally:
                conn.close()

    def _day(self, column: str) -> str:
        return f"substr({column}, 1, 10)"

    def _meta(self, key: str) -> str:
        return f"json_extract(meta, '$.{key}')"


class PostgresUsageLedger(SQLUsageLedger):
    """PostgreSQL (Supabase's database through its connection string): tables from the migrations."""

    _block_type_name = "VibeInsight Postgres Usage Ledger"
    _p: ClassVar[str] = "%s"

    url: SecretStr = Field(description="postgresql://… connection string")

    @contextmanager
    def _conn(self):
        import psycopg

        with psycopg.connect(self.url.get_secret_value()) as conn:
            yield conn

    def _day(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def _meta(self, key: str) -> str:
        return f"meta ->> '{key}'"

    def _stream(self, conn):
        return conn.cursor(name="usage_events_read")  # server side: rows arrive batch by batch

    def _select(self, column: str) -> str:
        # Plain numbers convert far faster than datetime and Decimal objects (100,000 rows).
        return {"at": "extract(epoch from at)::float8", "cost_usd": "cost_usd::float8",
                "session_id": "session_id::text"}.get(column, column)

    def _value(self, column: str, value: Any) -> Any:
        if column == "at":
            return value  # timestamptz: psycopg adapts an aware datetime
        return super()._value(column, value)

    # What a run calls goes through the migrations' functions, as on Supabase: a run's login (a member
    # of the role vibeinsight_run) may execute them and holds no grant on the table itself.

    def _call(self, sql: str, params: tuple) -> Any:
        with self._conn() as conn:
            (value,) = conn.execute(sql, params).fetchone()
            conn.commit()
            return value

    def record(self, events: Iterable[UsageEvent | dict]) -> int:
        rows = [e.model_dump(mode="json") for e in self._events(events)]
        if not rows:
            return 0
        return int(self._call("SELECT public.record_usage_events(%s::jsonb)", (json.dumps(rows, ensure_ascii=False),)))

    def daily_totals(self, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
        days = self._call("SELECT public.usage_daily_totals(%s, %s, %s, %s)",
                          (start, end, list(EGRESS_KINDS), list(REALTIME_KINDS)))
        return {day: {k: float(t.get(k) or 0) for k in DAILY_TOTALS} for day, t in sorted(days.items())}

    def user_egress(self, start: datetime, end: datetime, user_id: str) -> int:
        return int(self._call("SELECT public.usage_user_egress(%s, %s, %s, %s)",
                              (start, end, user_id, list(EGRESS_KINDS))) or 0)


class SupabaseUsageLedger(UsageLedger, SupabaseOptions):
    """Supabase through PostgREST (server side only): RPC functions of migrations 20261129000400 and
    20261129000500 (the provider columns), one request per call. A run token may record and read the
    guard's totals; the report's reads and the alerts need the service role key."""

    _block_type_name = "VibeInsight Supabase Usage Ledger"

    def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        import httpx

        resp = httpx.post(f"{self.url.rstrip('/')}/rest/v1/rpc/{function}", json=params, timeout=max(self.timeout_s, 30.0),
                          headers=self.auth_headers())
        resp.raise_for_status()
        return resp.json()

    def record(self, events: Iterable[UsageEvent | dict]) -> int:
        rows = [e.model_dump(mode="json") for e in self._events(events)]
        return int(self._rpc("record_usage_events", {"events": rows})) if rows else 0

    def events(self, start: datetime, end: datetime) -> pd.DataFrame:
        return to_frame(self._rpc("usage_events_between", {"p_start": start.isoformat(), "p_end": end.isoformat()}))

    def daily_egress(self, start: datetime, end: datetime) -> dict[str, int]:
        days = self._rpc("usage_daily_egress", {"p_start": start.isoformat(), "p_end": end.isoformat(),
                                                "p_kinds": list(EGRESS_KINDS)})
        return {day: int(total) for day, total in sorted(days.items())}

    def user_egress(self, start: datetime, end: datetime, user_id: str) -> int:
        return int(self._rpc("usage_user_egress", {"p_start": start.isoformat(), "p_end": end.isoformat(),
                                                   "p_user_id": user_id, "p_kinds": list(EGRESS_KINDS)}) or 0)

    def daily_totals(self, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
        days = self._rpc("usage_daily_totals", {"p_start": start.isoformat(), "p_end": end.isoformat(),
                                                "p_egress_kinds": list(EGRESS_KINDS),
                                                "p_realtime_kinds": list(REALTIME_KINDS)})
        return {day: {k: float(t.get(k) or 0) for k in DAILY_TOTALS} for day, t in sorted(days.items())}

    def record_alerts(self, alerts: list[dict], month: str, plan: str, flow_run_id: str | None = None) -> int:
        rows = self._alert_rows(alerts, month, plan, flow_run_id)
        return int(self._rpc("record_quota_alerts", {"alerts": rows})) if rows else 0

    def alerts(self, month: str | None = None) -> list[dict]:
        return self._rpc("quota_alerts_of", {"p_month": month})


_sqlite_lock = threading.Lock()
