"""The ownership migration on a real PostgreSQL: a session's owner never changes, request_run()
decides runs per user, and clients hold no grant on the ledger's sequences."""

from __future__ import annotations

import uuid

import psycopg
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture()
def db(pg_url):
    users = [uuid.uuid4() for _ in range(2)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for u in users:
            conn.execute("insert into auth.users (id) values (%s)", (u,))
        conn.execute("set role service_role")
        yield conn, users


def request_run(conn, sid, user, key, rerun=False, in_flight=3, per_hour=20) -> dict:
    return conn.execute("select public.request_run(%s, %s, %s, 'process-audio/api', %s, %s, %s)",
                        (sid, user, key, rerun, in_flight, per_hour)).fetchone()[0]


def update(conn, sid, status, seq, user=None, run="run-1", attempt=0) -> bool:
    return conn.execute("select public.apply_status_update(%s, %s, %s, %s, %s, p_attempt => %s)",
                        (sid, status, seq, user, run, attempt)).fetchone()[0]


def owner(conn, sid):
    return conn.execute("select user_id from public.processing_status where session_id = %s", (sid,)).fetchone()[0]


def test_an_update_naming_another_user_is_ignored_and_the_owner_stays(db):
    conn, (a, b) = db
    sid = uuid.uuid4()
    assert request_run(conn, sid, a, "uploads/a/1.wav")["outcome"] == "created"
    assert update(conn, sid, "RUNNING", 10, user=b) is False  # the old rule moved the row to b here
    assert owner(conn, sid) == a
    assert update(conn, sid, "RUNNING", 11) is False  # nor one naming no user (20261204000100)
    assert update(conn, sid, "COMPLETED", 12, user=a) is True
    assert owner(conn, sid) == a
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("update public.processing_status set user_id = %s where session_id = %s", (b, sid))
    assert owner(conn, sid) == a


def test_request_run_outcomes(db):
    conn, (a, b) = db
    sid, key = uuid.uuid4(), "uploads/a/1.wav"
    assert request_run(conn, sid, a, key)["outcome"] == "created"
    again = request_run(conn, sid, a, key)
    assert (again["outcome"], again["attempt"]) == ("exists", 0)
    assert request_run(conn, sid, b, key) == {"outcome": "conflict"}  # nothing else about the session
    assert request_run(conn, sid, a, "uploads/a/2.wav")["outcome"] == "key_mismatch"
    assert request_run(conn, uuid.uuid4(), a, key)["outcome"] == "upload_taken"
    assert request_run(conn, sid, a, key, rerun=True)["outcome"] == "in_flight"
    assert update(conn, sid, "FAILED", 50, user=a)
    rerun = request_run(conn, sid, a, key, rerun=True)
    assert (rerun["outcome"], rerun["attempt"]) == ("rerun", 1)
    row = conn.execute("select status, progress, error_code, seq, flow_run_id, attempt from public.processing_status "
                       "where session_id = %s", (sid,)).fetchone()
    assert row == ("PENDING", 0, None, 50, None, 1)  # the re-run names no run until it has one
    # the old run's late writes no longer apply, even newer ones (tests/test_current_run.py); the new run's do
    assert update(conn, sid, "FAILED", 50, user=a) is False
    assert update(conn, sid, "RUNNING", 60, user=a, run="run-2", attempt=1) is True


def test_request_run_limits_count_only_the_callers_runs(db):
    conn, (a, b) = db
    for i in range(2):
        assert request_run(conn, uuid.uuid4(), a, f"uploads/a/{i}.wav", in_flight=2)["outcome"] == "created"
    assert request_run(conn, uuid.uuid4(), a, "uploads/a/9.wav", in_flight=2) == {"outcome": "too_many_in_flight"}
    assert request_run(conn, uuid.uuid4(), b, "uploads/b/1.wav", in_flight=2)["outcome"] == "created"
    assert request_run(conn, uuid.uuid4(), b, "uploads/b/2.wav", per_hour=1) == {"outcome": "too_many_per_hour"}


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_clients_cannot_call_the_rpcs_or_use_the_sequences(pg_url, role):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for seq in ("usage_events_id_seq", "quota_alerts_id_seq", "run_requests_id_seq"):
            for priv in ("USAGE", "SELECT", "UPDATE"):
                assert conn.execute("select has_sequence_privilege(%s, %s, %s)",
                                    (role, f"public.{seq}", priv)).fetchone()[0] is False, (seq, priv)
        for fn in ("request_run(uuid, uuid, text, text, boolean, integer, integer, text)",
                   "set_current_run(uuid, uuid, integer, text)",
                   "apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text, integer, "
                   "double precision)"):
            assert conn.execute("select has_function_privilege(%s, %s, 'EXECUTE')",
                                (role, f"public.{fn}")).fetchone()[0] is False, fn
        assert conn.execute("select has_table_privilege(%s, 'public.run_requests', 'SELECT')",
                            (role,)).fetchone()[0] is False
