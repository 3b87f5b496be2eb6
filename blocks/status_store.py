"""The processing_status store: one interface, three back ends (SQLite, PostgreSQL, Supabase).

Every implementation applies the same rule: an update with an older sequence
number, or one that would move the same run out of a terminal state, is ignored.
PostgreSQL and Supabase both call the SQL function public.apply_status_update of
infra/supabase/migrations (directly with psycopg, or through PostgREST RPC); they
share the parameter mapping and row parsing below and differ only in the I/O.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from vibeinsight.schemas import TERMINAL, SessionWriter, Status, StatusRow, StatusUpdate
from vibeinsight.settings import SupabaseOptions
from vibeinsight.status_rule import seconds_ahead

log = logging.getLogger("vibeinsight.status")

TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL, key=lambda s: s.value))
RETRYABLE_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL - {Status.COMPLETED}, key=lambda s: s.value))


class StatusStore(Block):
    _block_type_name = "VibeInsight Status Store"

    max_clock_skew_s: float | None = Field(None, gt=0, description="refuse a write timestamped this far ahead of "
                                           "the clock (VIBEINSIGHT_STATUS_MAX_CLOCK_SKEW_S, set by the registry)")

    def apply(self, update: StatusUpdate, deployment: str | None = None) -> bool:
        """Apply one update atomically; True when the row changed. An update timestamped more than
        the allowed skew ahead of this clock is refused (and logged): it would outrank every later write."""
        skew = self.max_clock_skew_s
        if skew is not None and (ahead := seconds_ahead(update.seq)) > skew:
            log.warning("status write for %s refused: its time is %.0f s ahead of this clock (skew allowed %.0f s)",
                        update.session_id, ahead, skew, extra={"session_id": update.session_id})
            return False
        return self._apply(update, deployment, skew)

    @abstractmethod
    def _apply(self, update: StatusUpdate, deployment: str | None, max_ahead_s: float | None) -> bool:
        """The write itself; the database refuses it too when it is `max_ahead_s` ahead of its own clock."""

    @abstractmethod
    def get(self, session_id: str) -> StatusRow | None:
        ...

    def writer(self, session_id: str) -> SessionWriter | None:
        """The row's owner, attempt and current run: what a run checks before it writes (a run's
        credential reads no table, so the databases answer this through public.session_writer)."""
        row = self.get(session_id)
        return SessionWriter.model_validate(row, from_attributes=True) if row else None

    @abstractmethod
    def open_rows(self, limit: int = 500, before: datetime | None = None, offset: int = 0) -> list[StatusRow]:
        """Rows still PENDING or RUNNING (last updated before `before`, when given), oldest update first,
        skipping the first `offset` of them: what reconcile-status checks, page by page."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS processing_status (
    session_id    TEXT PRIMARY KEY,
    user_id       TEXT,
    flow_run_id   TEXT,
    status        TEXT NOT NULL CHECK (status IN
                    ('PENDING','RUNNING','COMPLETED','FAILED','CRASHED','CANCELLED')),
    stage         TEXT,
    progress      INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    error_code    TEXT,
    error_message TEXT,
    result_key    TEXT,
    seq           INTEGER NOT NULL,
    attempt       INTEGER,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
"""

# The same rule as the PostgreSQL function of the status migrations: newer seq only; an owned row
# only from its owner's runs, a managed row (attempt set) only from its current run; and a
# terminal row changes only when a different flow run (a re-run) writes, or, for FAILED, CRASHED
# and CANCELLED, when a newer state of the same flow run (a Prefect retry) does.
_UPSERT = f"""
INSERT INTO processing_status AS p
    (session_id, user_id, flow_run_id, status, stage, progress, error_code, error_message,
     result_key, seq, created_at, updated_at)
VALUES (:session_id, :user_id, :flow_run_id, :status, :stage, COALESCE(:progress, 0), :error_code,
        :error_message, :result_key, :seq, :now, :now)
ON CONFLICT (session_id) DO UPDATE SET
    user_id       = COALESCE(excluded.user_id, p.user_id),
    flow_run_id   = COALESCE(excluded.flow_run_id, p.flow_run_id),
    status        = excluded.status,
    stage         = COALESCE(excluded.stage, p.stage),
    progress      = COALESCE(:progress, p.progress),
    error_code    = excluded.error_code,
    error_message = excluded.error_message,
    result_key    = COALESCE(excluded.result_key, p.result_key),
    seq           = excluded.seq,
    updated_at    = excluded.updated_at
WHERE excluded.seq > p.seq
  AND (p.user_id IS NULL OR excluded.user_id = p.user_id)
  AND (p.attempt IS NULL
       OR (:attempt = p.attempt
           AND (p.flow_run_id IS NULL OR excluded.flow_run_id IS NULL OR excluded.flow_run_id = p.flow_run_id)))
  AND (p.status NOT IN ({TERMINAL_SQL})
       OR (excluded.flow_run_id IS NOT NULL AND excluded.flow_run_id IS NOT p.flow_run_id)
       OR (p.status IN ({RETRYABLE_SQL}) AND excluded.flow_run_id = p.flow_run_id))
"""


class SQLiteStatusStore(StatusStore):
    """The embedded default: a SQLite file under VIBEINSIGHT_HOME."""

    _block_type_name = "VibeInsight SQLite Status Store"

    path: str = Field(description="SQLite database file")

    def _connect(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        if "attempt" not in {r[1] for r in conn.execute("PRAGMA table_info(processing_status)")}:
            conn.execute("ALTER TABLE processing_status ADD COLUMN attempt INTEGER")  # a file from before it
        return conn

    def _apply(self, update: StatusUpdate, deployment: str | None, max_ahead_s: float | None) -> bool:
        params = update.model_dump(mode="json")
        params["now"] = datetime.now(timezone.utc).isoformat()
        with _lock, self._connect() as conn:
            cur = conn.execute(_UPSERT, params)
            return cur.rowcount > 0

    def get(self, session_id: str) -> StatusRow | None:
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM processing_status WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            return None
        return StatusRow(**{k: row[k] for k in row.keys() if k != "created_at"})

    def open_rows(self, limit: int = 500, before: datetime | None = None, offset: int = 0) -> list[StatusRow]:
        cutoff = (before or datetime.max.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM processing_status WHERE status IN ('PENDING','RUNNING') AND updated_at < ? "
                "ORDER BY updated_at, session_id LIMIT ? OFFSET ?", (cutoff, limit, offset)).fetchall()
        return [StatusRow(**{k: r[k] for k in r.keys() if k != "created_at"}) for r in rows]


_lock = threading.Lock()


# --- PostgreSQL and Supabase: the same SQL function, different transport ---

OPEN_STATUSES = (Status.PENDING.value, Status.RUNNING.value)
ROW_COLUMNS = ("session_id", "user_id", "flow_run_id", "status", "stage", "progress", "error_code",
               "error_message", "result_key", "seq", "attempt", "updated_at")


def rpc_params(update: StatusUpdate, deployment: str | None = None, max_ahead_s: float | None = None) -> dict[str, Any]:
    """The named arguments of public.apply_status_update for one update."""
    return {"p_attempt": update.attempt, "p_max_ahead_s": max_ahead_s,
        "p_session_id": update.session_id, "p_status": update.status.value, "p_seq": update.seq,
        "p_user_id": update.user_id, "p_flow_run_id": update.flow_run_id, "p_deployment": deployment,
        "p_stage": update.stage, "p_progress": update.progress, "p_error_code": update.error_code,
        "p_error_message": update.error_message, "p_result_key": update.result_key,
    }


def parse_row(row: dict[str, Any]) -> StatusRow:
    return StatusRow(**{k: (str(row[k]) if k in ("session_id", "user_id") and row.get(k) is not None else row.get(k))
                        for k in ROW_COLUMNS if k in row})


_CALL_SQL = ("SELECT public.apply_status_update(%(p_session_id)s, %(p_status)s, %(p_seq)s, %(p_user_id)s, "
             "%(p_flow_run_id)s, %(p_deployment)s, %(p_stage)s, %(p_progress)s, %(p_error_code)s, "
             "%(p_error_message)s, %(p_result_key)s, %(p_attempt)s, %(p_max_ahead_s)s)")
_SELECT_SQL = "SELECT " + ", ".join(ROW_COLUMNS) + " FROM public.processing_status"


class PostgresStatusStore(StatusStore):
    """Direct PostgreSQL (VIBEINSIGHT_STATUS_URL=postgresql://…) with psycopg 3."""

    _block_type_name = "VibeInsight PostgreSQL Status Store"

    url: SecretStr = Field(description="postgresql:// connection URL (a role allowed to call the function)")
    pg_role: str | None = Field(None, description="SET ROLE before each statement, e.g. service_role")
    connect_timeout_s: int = Field(5, description="fail fast when the database is down: the writer retries")

    def _connect(self):
        import psycopg
        from psycopg.rows import dict_row

        conn = psycopg.connect(self.url.get_secret_value(), autocommit=True, row_factory=dict_row,
                               connect_timeout=self.connect_timeout_s)
        if self.pg_role:
            conn.execute(f'SET ROLE "{self.pg_role}"')
        return conn

    def _apply(self, update: StatusUpdate, deployment: str | None, max_ahead_s: float | None) -> bool:
        with self._connect() as conn:
            row = conn.execute(_CALL_SQL, rpc_params(update, deployment, max_ahead_s)).fetchone()
        return bool(row and next(iter(row.values())))

    def get(self, session_id: str) -> StatusRow | None:
        with self._connect() as conn:
            row = conn.execute(_SELECT_SQL + " WHERE session_id = %s", (session_id,)).fetchone()
        return parse_row(row) if row else None

    def writer(self, session_id: str) -> SessionWriter | None:
        with self._connect() as conn:
            row = conn.execute("SELECT public.session_writer(%s) AS w", (session_id,)).fetchone()
        return SessionWriter.model_validate(row["w"]) if row and row["w"] else None

    def open_rows(self, limit: int = 500, before: datetime | None = None, offset: int = 0) -> list[StatusRow]:
        with self._connect() as conn:
            rows = conn.execute(_SELECT_SQL + " WHERE status = ANY(%s) AND updated_at < coalesce(%s::timestamptz, 'infinity') "
                                "ORDER BY updated_at, session_id LIMIT %s OFFSET %s",
                                (list(OPEN_STATUSES), before, limit, offset)).fetchall()
        return [parse_row(r) for r in rows]


class SupabaseStatusStore(StatusStore, SupabaseOptions):
    """Supabase through PostgREST (supabase-py), server side only. With the service role key every method
    works (observer, reconcile); with a run token only `apply` does: the run role reads no table."""

    _block_type_name = "VibeInsight Supabase Status Store"

    _cached_client: Any = PrivateAttr(None)

    def _client(self):
        import httpx
        from supabase import ClientOptions, create_client

        # One client per store object: supabase-py keeps an httpx connection pool.
        if self._cached_client is None:
            headers = self.auth_headers()  # an explicit Authorization is what supabase-py sends as the bearer
            self._cached_client = create_client(
                self.url, headers["apikey"],
                options=ClientOptions(httpx_client=httpx.Client(timeout=self.timeout_s), headers=headers,
                                      auto_refresh_token=False, persist_session=False))
        return self._cached_client

    def _apply(self, update: StatusUpdate, deployment: str | None, max_ahead_s: float | None) -> bool:
        res = self._client().rpc("apply_status_update", rpc_params(update, deployment, max_ahead_s)).execute()
        return bool(res.data)

    def writer(self, session_id: str) -> SessionWriter | None:
        res = self._client().rpc("session_writer", {"p_session_id": session_id}).execute()
        return SessionWriter.model_validate(res.data) if res.data else None

    def get(self, session_id: str) -> StatusRow | None:
        res = (self._client().table("processing_status").select(",".join(ROW_COLUMNS))
               .eq("session_id", session_id).limit(1).execute())
        return parse_row(res.data[0]) if res.data else None

    def open_rows(self, limit: int = 500, before: datetime | None = None, offset: int = 0) -> list[StatusRow]:
        query = self._client().table("processing_status").select(",".join(ROW_COLUMNS)).in_("status", list(OPEN_STATUSES))
        if before is not None:
            query = query.lt("updated_at", before.isoformat())
        query = query.order("updated_at").limit(limit)
        res = (query.offset(offset) if offset else query).execute()
        return [parse_row(r) for r in res.data]
