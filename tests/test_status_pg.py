"""The status migrations on a Supabase-shaped PostgreSQL, and the PostgreSQL status store."""

from __future__ import annotations

import json
import random
import threading
import uuid

import psycopg
import pytest

from blocks.status_store import PostgresStatusStore
from tests.pg import create_database, drop_database
from vibeinsight.schemas import Status, StatusUpdate

pytestmark = pytest.mark.integration


def _users(url: str, n: int = 2) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(url, autocommit=True) as conn:
        for i in ids:
            conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (i, f"{i[:6]}@example.com"))
    return ids


def _as(conn, role: str, sub: str | None = None) -> None:
    """What PostgREST does per request: switch to the JWT's role and expose its claims."""
    conn.execute(f"SET ROLE {role}")
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": sub, "role": role}) if sub else "",))


def test_migrations_apply_on_a_bare_supabase_shape_and_join_the_publication(pg_url):
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime'")}
        rls = dict(conn.execute("SELECT relname, relrowsecurity FROM pg_class "
                                "WHERE relname IN ('processing_status', 'usage_events')").fetchall())
    assert "processing_status" in tables
    assert rls == {"processing_status": True, "usage_events": True}


def test_migrations_are_rejected_without_the_supabase_standins():
    url = create_database(apply_migrations=False)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP PUBLICATION supabase_realtime")
            from tests.pg import migration_files
            with pytest.raises(psycopg.errors.UndefinedObject):
                conn.execute(migration_files()[0].read_text())
    finally:
        drop_database(url)


def test_rls_a_user_sees_only_their_rows_anon_nothing_and_clients_cannot_write(pg_url):
    alice, bob = _users(pg_url)
    store = PostgresStatusStore(url=pg_url, pg_role="service_role")
    s_a, s_b = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.apply(StatusUpdate(session_id=s_a, status=Status.RUNNING, seq=1, user_id=alice, progress=3))
    assert store.apply(StatusUpdate(session_id=s_b, status=Status.RUNNING, seq=1, user_id=bob, progress=4))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO public.usage_events (session_id, kind, service, provider, bytes) VALUES "
                     "(%s, 'api_call', 'openai', 'openai', 10), (%s, 'api_call', 'openai', 'openai', 20)", (s_a, s_b))
    with psycopg.connect(pg_url) as conn:
        _as(conn, "authenticated", alice)
        assert [str(r[0]) for r in conn.execute("SELECT session_id FROM processing_status")] == [s_a]
        assert [r[0] for r in conn.execute("SELECT bytes FROM usage_events")] == [10]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE processing_status SET progress = 99")
        conn.rollback()
        _as(conn, "authenticated", alice)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the function is the service role's
            conn.execute("SELECT apply_status_update(%s, 'COMPLETED', 99)", (s_a,))
        conn.rollback()
        _as(conn, "anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM processing_status")
        conn.rollback()
        _as(conn, "anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM usage_events")


def test_the_function_keeps_the_newest_and_terminal_rows_final(pg_url):
    store = PostgresStatusStore(url=pg_url, pg_role="service_role")
    sid = str(uuid.uuid4())
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=10, flow_run_id="r1", stage="ingest",
                                    progress=2), deployment="process-audio/prod")
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=30, stage="transcribe", progress=40))
    assert not store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=20, stage="transcode", progress=9))
    row = store.get(sid)
    assert (row.stage, row.progress, row.flow_run_id, row.seq) == ("transcribe", 40, "r1", 30)
    assert store.apply(StatusUpdate(session_id=sid, status=Status.COMPLETED, seq=40, flow_run_id="r1",
                                    result_key="results/x.json"))
    assert not store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=50, flow_run_id="r1"))
    assert not store.apply(StatusUpdate(session_id=sid, status=Status.FAILED, seq=51, error_code="late"))
    assert store.get(sid).status is Status.COMPLETED  # final for its run (FAILED is not: tests/test_faults_status.py)
    assert store.apply(StatusUpdate(session_id=sid, status=Status.PENDING, seq=60, flow_run_id="r2"))
    row = store.get(sid)
    assert row.status is Status.PENDING and row.error_code is None and row.flow_run_id == "r2"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT deployment FROM processing_status WHERE session_id = %s",
                            (sid,)).fetchone()[0] == "process-audio/prod"


def test_concurrent_out_of_order_writers_keep_the_newest(pg_url):
    store = PostgresStatusStore(url=pg_url, pg_role="service_role")
    sid = str(uuid.uuid4())
    updates = [StatusUpdate(session_id=sid, status=Status.RUNNING, seq=i, flow_run_id="r1", progress=i % 100,
                            stage=f"s{i}") for i in range(1, 161)]
    updates.append(StatusUpdate(session_id=sid, status=Status.COMPLETED, seq=150, flow_run_id="r1", progress=100))
    random.Random(11).shuffle(updates)
    applied = []

    def write(chunk):
        with psycopg.connect(pg_url, autocommit=True) as conn:  # one connection per writer, as in production
            conn.execute("SET ROLE service_role")
            for u in chunk:
                applied.append((u.seq, conn.execute(
                    "SELECT apply_status_update(%s, %s, %s, p_flow_run_id => %s, p_stage => %s, p_progress => %s)",
                    (u.session_id, u.status.value, u.seq, u.flow_run_id, u.stage, u.progress)).fetchone()[0]))

    threads = [threading.Thread(target=write, args=(updates[i::6],)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    row = store.get(sid)
    # COMPLETED (seq 150) is terminal for run r1 unless a newer seq landed before it; either way
    # the row never goes backwards: its seq is the highest applied one.
    top = max(seq for seq, ok in applied if ok)
    assert row.seq == top
    if row.status is Status.COMPLETED:
        assert row.seq == 150 and all(seq < 150 or not ok for seq, ok in applied if seq != 150)
    else:
        assert row.seq == 160 and row.stage == "s160"


def test_rows_stay_compact(pg_url):
    store = PostgresStatusStore(url=pg_url, pg_role="service_role")
    sid = str(uuid.uuid4())
    store.apply(StatusUpdate(session_id=sid, status=Status.FAILED, seq=1, flow_run_id=str(uuid.uuid4()),
                             stage="transcribe", progress=55, error_code="transcription_failed",
                             error_message="x" * 500, result_key=f"results/{sid}.json"), deployment="d" * 100)
    # a Japanese message is three bytes a character: clipped by bytes, not characters
    jp = str(uuid.uuid4())
    store.apply(StatusUpdate(session_id=jp, status=Status.FAILED, seq=1, flow_run_id=str(uuid.uuid4()),
                             stage="transcribe", error_code="transcription_failed",
                             error_message="音声ファイルを解析できませんでした。" * 25, result_key=f"results/{jp}.json"),
                deployment="d" * 100)
    with psycopg.connect(pg_url) as conn:
        sizes = [r[0] for r in conn.execute("SELECT octet_length(row_to_json(p)::text) FROM processing_status p")]
        message = conn.execute("SELECT error_message FROM processing_status WHERE session_id = %s", (jp,)).fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("SELECT apply_status_update(%s, 'BOGUS', 2)", (sid,))
    assert len(sizes) == 2 and max(sizes) < 1024
    assert message.startswith("音声ファイルを解析できませんでした。") and message.endswith("…")


def test_open_rows_lists_pending_and_running_only(pg_url):
    store = PostgresStatusStore(url=pg_url, pg_role="service_role")
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    store.apply(StatusUpdate(session_id=a, status=Status.RUNNING, seq=1, flow_run_id="r"))
    store.apply(StatusUpdate(session_id=b, status=Status.PENDING, seq=1, flow_run_id="r"))
    store.apply(StatusUpdate(session_id=c, status=Status.COMPLETED, seq=1, flow_run_id="r"))
    assert sorted(r.session_id for r in store.open_rows()) == sorted([a, b])


def test_store_down_raises_quickly():
    store = PostgresStatusStore(url="postgresql://postgres@127.0.0.1:1/nope", connect_timeout_s=1)
    with pytest.raises(psycopg.OperationalError):
        store.apply(StatusUpdate(session_id=str(uuid.uuid4()), status=Status.RUNNING, seq=1))
