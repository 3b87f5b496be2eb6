"""The processing_status store: one interface, SQLite first (Supabase and PostgreSQL later).

Every implementation applies the same rule: an update with an older sequence
number, or one that would move the same run out of a terminal state, is ignored.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import abstractmethod
from datetime import datetime, timezone
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from vibeinsight.schemas import TERMINAL, StatusRow, StatusUpdate

TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL, key=lambda s: s.value))


class StatusStore(Block):
    _block_type_name = "VibeInsight Status Store"

    @abstractmethod
    def apply(self, update: StatusUpdate) -> bool:
        """Apply one update atomically; True when the row changed."""

    @abstractmethod
    def get(self, session_id: str) -> StatusRow | None:
        ...


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
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
"""

# The same rule as the PostgreSQL function of the status migrations: newer seq only,
# and a terminal row changes only when a different flow run (a re-run) writes.
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
  AND (p.status NOT IN ({TERMINAL_SQL})
       OR (excluded.flow_run_id IS NOT NULL AND excluded.flow_run_id IS NOT p.flow_run_id))
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
        return conn

    def apply(self, update: StatusUpdate) -> bool:
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


_lock = threading.Lock()
