"""One session, one owner, one current run (issue 20) on a real PostgreSQL with every migration: the owner
rule, the current-run rule, set_current_run(), request_run()'s request id, and the clock check."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from blocks.status_store import PostgresStatusStore
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.status_rule import next_seq, seq_of

pytestmark = pytest.mark.integration


@pytest.fixture()
def db(pg_url):
    users = [str(uuid.uuid4()) for _ in range(2)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for u in users:
            conn.execute("insert into auth.users (id) values (%s)", (u,))
        conn.execute("set role service_role")
        yield conn, users, PostgresStatusStore(url=pg_url, pg_role="service_role", max_clock_skew_s=60)


def request_run(conn, sid, user, key, rerun=False, request_id=None) -> dict:
    return conn.execute("select public.request_run(%s, %s, %s, 'process-audio/api', %s, 50, 50, %s)",
                        (sid, user, key, rerun, request_id)).fetchone()[0]


def set_current_run(conn, sid, user, attempt, run) -> bool:
    return conn.execute("select public.set_current_run(%s, %s, %s, %s)", (sid, user, attempt, run)).fetchone()[0]


def snapshot(conn, sid):
    """The whole row as text: byte for byte what a reader gets."""
    return conn.execute("select row_to_json(p)::text from public.processing_status p where session_id = %s",
                        (sid,)).fetchone()[0]


def write(store, sid, status, user, run, attempt, seq=None) -> bool:
    return store.apply(StatusUpdate(session_id=sid, status=status, seq=seq or next_seq(), user_id=user,
                                    flow_run_id=run, attempt=attempt))


@pytest.mark.shares_clock("its writes meet PostgreSQL's now(): a row stamped ahead of it is refused")
def test_an_owned_row_takes_writes_from_its_owners_runs_only(db):
    conn, (victim, other), store = db
    sid = str(uuid.uuid4())
    assert request_run(conn, sid, victim, "uploads/v/1.wav")["outcome"] == "created"
    assert set_current_run(conn, sid, victim, 0, "run-1")
    assert write(store, sid, Status.RUNNING, victim, "run-1", 0)
    before = snapshot(conn, sid)
    # the session's current run and attempt, but naming no user or another user: refused
    assert not write(store, sid, Status.FAILED, None, "run-1", 0)
    assert not write(store, sid, Status.FAILED, other, "run-1", 0)
    assert snapshot(conn, sid) == before


@pytest.mark.shares_clock("its writes meet PostgreSQL's now(): a row stamped ahead of it is refused")
def test_a_rerun_takes_writes_from_its_own_run_only(db):
    conn, (user, _), store = db
    sid, key = str(uuid.uuid4()), "uploads/u/1.wav"
    request_run(conn, sid, user, key)
    assert set_current_run(conn, sid, user, 0, "run-1")
    assert write(store, sid, Status.COMPLETED, user, "run-1", 0)
    assert request_run(conn, sid, user, key, rerun=True)["attempt"] == 1
    pending = snapshot(conn, sid)
    # the old run's states, however new (its observer event, a late reconcile), never move the row again
    for status in (Status.COMPLETED, Status.FAILED, Status.RUNNING):
        assert not write(store, sid, status, user, "run-1", 0)
    # nor a run that is no request of the session (no attempt: the Prefect UI or API)
    assert not write(store, sid, Status.RUNNING, user, "run-forged", None)
    assert snapshot(conn, sid) == pending
    # the new run's first write lands before the Edge Function names it, and names it
    assert write(store, sid, Status.RUNNING, user, "run-2", 1)
    row = store.get(sid)
    assert (row.status, row.flow_run_id, row.attempt) == (Status.RUNNING, "run-2", 1)
    # then another run of the same attempt cannot take over, and a late answer of Prefect changes nothing
    assert not write(store, sid, Status.COMPLETED, user, "run-3", 1)
    assert set_current_run(conn, sid, user, 1, "run-3") is False
    assert set_current_run(conn, sid, user, 1, "run-2") is True
    assert write(store, sid, Status.COMPLETED, user, "run-2", 1)
    assert store.get(sid).status is Status.COMPLETED


def test_set_current_run_a_stale_answer_cannot_win(db):
    conn, (user, other), _ = db
    sid, key = str(uuid.uuid4()), "uploads/u/2.wav"
    request_run(conn, sid, user, key)
    conn.execute("select public.apply_status_update(%s, 'FAILED', 10, %s, p_attempt => 0)", (sid, user))
    request_run(conn, sid, user, key, rerun=True)
    assert set_current_run(conn, sid, user, 0, "run-old") is False  # Prefect's answer for attempt 0, late
    assert set_current_run(conn, sid, other, 1, "run-theirs") is False  # not the owner
    assert store_run(conn, sid) is None
    assert set_current_run(conn, sid, user, 1, "run-new") is True
    assert store_run(conn, sid) == "run-new"
    assert conn.execute("select flow_run_id from public.run_requests where session_id = %s and attempt = 1",
                        (sid,)).fetchone()[0] == "run-new"


def store_run(conn, sid):
    return conn.execute("select flow_run_id from public.processing_status where session_id = %s", (sid,)).fetchone()[0]


def test_request_run_with_the_same_request_id_answers_the_same(db):
    conn, (user, other), _ = db
    sid, key = str(uuid.uuid4()), "uploads/u/3.wav"
    first = request_run(conn, sid, user, key, request_id="req-1")
    assert first == request_run(conn, sid, user, key, request_id="req-1") == {"outcome": "created", "attempt": 0,
                                                                              "status": "PENDING"}
    conn.execute("select public.apply_status_update(%s, 'COMPLETED', 10, %s, p_attempt => 0)", (sid, user))
    rerun = request_run(conn, sid, user, key, rerun=True, request_id="req-2")
    assert (rerun["outcome"], rerun["attempt"]) == ("rerun", 1)
    # call() retries a committed call whose answer was lost: the same decision, no second attempt
    assert request_run(conn, sid, user, key, rerun=True, request_id="req-2") == rerun
    assert conn.execute("select count(*) from public.run_requests where session_id = %s", (sid,)).fetchone()[0] == 2
    # a new request is a new decision: the re-run is in flight
    assert request_run(conn, sid, user, key, rerun=True, request_id="req-3")["outcome"] == "in_flight"
    # a request id is the caller's: another user's same id decides afresh (their own session)
    assert request_run(conn, str(uuid.uuid4()), other, "uploads/o/1.wav", request_id="req-2")["outcome"] == "created"
    # and one reused for another session is refused, not answered with the first session's decision
    assert request_run(conn, str(uuid.uuid4()), user, "uploads/u/4.wav", request_id="req-1") == {"outcome": "conflict"}


@pytest.mark.shares_clock("its writes meet PostgreSQL's now(): a row stamped ahead of it is refused")
def test_a_write_timestamped_10_minutes_ahead_is_refused_and_a_later_correct_write_lands(db, caplog):
    conn, (user, _), store = db
    sid = str(uuid.uuid4())
    request_run(conn, sid, user, "uploads/u/5.wav")
    ahead = seq_of(datetime.now(timezone.utc) + timedelta(minutes=10))
    with caplog.at_level(logging.WARNING, logger="vibeinsight.status"):
        assert not write(store, sid, Status.COMPLETED, user, "run-1", 0, seq=ahead)
    assert "ahead of this clock" in caplog.text  # refused and logged
    assert store.get(sid).status is Status.PENDING
    assert write(store, sid, Status.RUNNING, user, "run-1", 0)  # the true state next: it lands
    assert store.get(sid).status is Status.RUNNING


@pytest.mark.shares_clock("its writes meet PostgreSQL's now(): a row stamped ahead of it is refused")
def test_the_database_refuses_a_write_ahead_of_its_own_clock(db):
    """A writer cannot see its own clock run fast (a Fly Machine's): the database's clock does."""
    conn, (user, _), store = db
    sid = str(uuid.uuid4())
    request_run(conn, sid, user, "uploads/u/6.wav")

    def sql_write(status, seq):
        return conn.execute("select public.apply_status_update(%s, %s, %s, %s, 'run-1', p_attempt => 0, "
                            "p_max_ahead_s => 60)", (sid, status, seq, user)).fetchone()[0]

    assert not sql_write("COMPLETED", seq_of(datetime.now(timezone.utc) + timedelta(minutes=10)))
    assert store.get(sid).status is Status.PENDING
    assert sql_write("RUNNING", next_seq())
    assert store.get(sid).status is Status.RUNNING


@pytest.mark.shares_clock("its writes meet PostgreSQL's now(): a row stamped ahead of it is refused")
def test_rows_no_request_run_made_keep_the_old_rule(db):
    """The CLI's and `vibeinsight trigger`'s rows: no attempt, any run of no owner may write, a re-run restarts it."""
    _, _, store = db
    sid = str(uuid.uuid4())
    assert write(store, sid, Status.RUNNING, None, "r1", None)
    assert write(store, sid, Status.COMPLETED, None, "r1", None)
    assert write(store, sid, Status.RUNNING, None, "r2", None)
    assert store.get(sid).attempt is None
