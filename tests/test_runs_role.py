"""The run Machines' database role (migration 20261204000300_runs_role) on a real PostgreSQL: with a
login that is a member of vibeinsight_run, or a token for that role through the PostgREST stand-in, a run
writes its status row and books usage, and reads, changes or calls nothing else."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import jwt
import psycopg
import pytest
from psycopg import sql

from blocks.status_store import PostgresStatusStore, SupabaseStatusStore
from blocks.usage_ledger import PostgresUsageLedger, SupabaseUsageLedger
from tests.fake_postgrest import FakePostgrest
from tests.pg import ADMIN_URL
from tests.uploads import as_upload
from vibeinsight.run_token import mint_run_token, verify_run_token
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.settings import RUN_ROLE
from vibeinsight.usage import UsageEvent

pytestmark = pytest.mark.integration

# What the role may execute; everything else in schema public is refused.
ALLOWED = {"apply_status_update", "record_usage_events", "usage_daily_totals", "usage_user_egress", "session_writer"}
SECRET = "s" * 40  # a JWT secret of Supabase's length


@pytest.fixture()
def run_login(pg_url):
    """A login role of the runs (a member of vibeinsight_run, nothing else) and its URL; roles are
    cluster-wide, so its name is this test's own."""
    name = f"vi_run_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(name), sql.Identifier(RUN_ROLE)))
    try:
        yield pg_url.replace("postgresql://postgres@", f"postgresql://{name}@", 1)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:  # its sessions end before the role goes
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def a_user(pg_url) -> str:
    uid = str(uuid.uuid4())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
    return uid


def admin_rows(pg_url, query: str, *params):
    with psycopg.connect(pg_url) as conn:
        return conn.execute(query, params).fetchall()


def public_tables(pg_url) -> list[str]:
    return [r[0] for r in admin_rows(pg_url, "select tablename from pg_tables where schemaname = 'public' order by 1")]


def usage(session_id: str, user_id: str) -> list[UsageEvent]:
    return [UsageEvent(session_id=session_id, kind="storage_download", service="supabase", bytes=1234,
                       meta={"user_id": user_id}),
            UsageEvent(session_id=session_id, kind="api_call", service="openai", calls=2, cost_usd=0.01)]


def test_the_run_login_writes_status_and_usage_and_the_guard_reads_its_sums(pg_url, run_login):
    user, sid = a_user(pg_url), str(uuid.uuid4())
    store = PostgresStatusStore(url=run_login)
    assert store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.RUNNING, seq=1, flow_run_id="r1",
                                    stage="ingest", progress=5), deployment="process-audio/fly")
    assert store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.COMPLETED, seq=2, flow_run_id="r1", progress=100,
                                    result_key=f"results/{sid}.json"))
    assert admin_rows(pg_url, "select user_id::text, status, result_key from processing_status where session_id = %s",
                      sid) == [(user, "COMPLETED", f"results/{sid}.json")]

    ledger = PostgresUsageLedger(url=run_login)
    assert ledger.record(usage(sid, user)) == 2
    assert admin_rows(pg_url, "select kind, provider, bytes, calls from usage_events where session_id = %s order by kind",
                      sid) == [("api_call", "openai", 0, 2), ("storage_download", "supabase", 1234, 0)]
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(days=1), now + timedelta(days=1)
    assert ledger.user_egress(start, end, user) == 1234
    assert sum(t["supabase_egress_bytes"] for t in ledger.daily_totals(start, end).values()) == 1234


def test_the_run_login_reads_changes_and_calls_nothing_else(pg_url, run_login):
    user, sid = a_user(pg_url), str(uuid.uuid4())
    PostgresStatusStore(url=run_login).apply(StatusUpdate(session_id=sid, user_id=user, status=Status.RUNNING, seq=1))
    tables = public_tables(pg_url)
    assert {"processing_status", "usage_events", "quota_alerts", "run_requests"} <= set(tables)
    statements = [f"select * from public.{t} limit 1" for t in tables] + \
                 [f"delete from public.{t}" for t in tables] + \
                 [f"insert into public.{t} default values" for t in tables] + [
        "update public.processing_status set status = 'FAILED'",
        "update public.usage_events set bytes = 0",
        "select * from auth.users",
        "select nextval('public.usage_events_id_seq')",
        # functions of the Edge Function, the report and the alerts
        f"select public.request_run('{uuid.uuid4()}', '{user}', 'uploads/{user}/x.wav', 'd', false, 9, 9)",
        "select public.usage_events_between(now() - interval '1 day', now())",
        "select public.usage_daily_egress(now() - interval '1 day', now(), array['storage_download'])",
        "select public.quota_alerts_of(null)",
        "select public.record_quota_alerts('[]'::jsonb)",
        f"select public.request_upload('{user}', 'uploads/{user}/x.wav', 10, 9, 99)",
    ]
    with psycopg.connect(run_login, autocommit=True) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert admin_rows(pg_url, "select status from processing_status where session_id = %s", sid) == [("RUNNING",)]


def test_the_role_executes_exactly_the_allowed_functions_as_their_owner(pg_url):
    """Every function of schema public (trigger functions aside, which nobody calls): the role may execute
    only the allowed ones, each SECURITY DEFINER with an empty search_path, on every overload."""
    rows = admin_rows(pg_url, """
        select p.proname, p.oid::regprocedure::text, has_function_privilege(%s, p.oid, 'execute'), p.prosecdef,
               coalesce(p.proconfig, '{}')
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and p.prorettype <> 'trigger'::regtype""", RUN_ROLE)
    executable = {name for name, _, can, _, _ in rows if can}
    assert executable == ALLOWED, executable
    for name, signature, _, definer, config in rows:
        if name in ALLOWED:
            assert definer and 'search_path=""' in config, (signature, definer, config)
    # no privilege on any table, view or sequence of public or auth
    assert admin_rows(pg_url, """
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('public', 'auth') and case
            when c.relkind = 'S' then has_sequence_privilege(%s, c.oid, 'USAGE, SELECT, UPDATE')
            when c.relkind in ('r', 'v', 'm', 'p', 'f') then
                has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
            else false end""", RUN_ROLE, RUN_ROLE) == []


def test_a_run_token_through_postgrest_writes_status_and_usage_and_nothing_else(pg_url):
    user, sid = a_user(pg_url), str(uuid.uuid4())
    token = mint_run_token(SECRET, days=30)
    with FakePostgrest(pg_url) as rest:
        # The stand-in maps a token to its role without checking signatures; PostgREST checks this:
        assert verify_run_token(token, SECRET)["role"] == RUN_ROLE
        options = {"url": rest.url, "run_token": token, "anon_key": rest.anon_key}
        store = SupabaseStatusStore(**options)
        assert store.apply(StatusUpdate(session_id=sid, user_id=user, status=Status.RUNNING, seq=1, flow_run_id="r1"))
        ledger = SupabaseUsageLedger(**options)
        assert ledger.record(usage(sid, user)) == 2
        now = datetime.now(timezone.utc)
        assert ledger.user_egress(now - timedelta(days=1), now + timedelta(days=1), user) == 1234
        sent = rest.requests[0]["headers"]
        assert (sent["apikey"], sent["authorization"]) == (rest.anon_key, f"Bearer {token}")

        # what the flow checks before it writes: the owner, attempt and run of this one session
        assert store.writer(sid).model_dump() == {"user_id": user, "attempt": None, "flow_run_id": "r1"}
        with pytest.raises(Exception) as read:
            store.get(sid)
        assert "42501" in str(read.value) or "permission denied" in str(read.value)
        for function, params in (
                ("request_run", {"p_session_id": str(uuid.uuid4()), "p_user_id": user, "p_upload_key": "uploads/x",
                                 "p_deployment": "d", "p_rerun": False, "p_max_in_flight": 9, "p_max_per_hour": 9}),
                ("usage_events_between", {"p_start": now.isoformat(), "p_end": now.isoformat()})):
            import httpx

            res = httpx.post(f"{rest.url}/rest/v1/rpc/{function}", json=params, headers=store.auth_headers())
            assert (res.status_code, res.json()["code"]) == (403, "42501"), res.text
    assert admin_rows(pg_url, "select count(*) from usage_events where session_id = %s", sid) == [(2,)]
    assert admin_rows(pg_url, "select count(*) from run_requests") == [(0,)]


@pytest.mark.parametrize("secret, days, problem", [("short", 30, "characters"), (SECRET, 0, "--days"),
                                                   (SECRET, 100_000, "--days")])
def test_a_run_token_needs_a_real_secret_and_a_lifetime(secret, days, problem):
    from vibeinsight.run_token import RunTokenError

    with pytest.raises(RunTokenError, match=problem):
        mint_run_token(secret, days)


def test_a_run_token_expires_and_another_secret_does_not_verify_it():
    issued = datetime(2026, 1, 1, tzinfo=timezone.utc)
    token = mint_run_token(SECRET, days=1, now=issued)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert (claims["role"], claims["exp"] - claims["iat"]) == (RUN_ROLE, 86400)
    assert verify_run_token(token, SECRET, now=issued + timedelta(hours=23, minutes=59))["role"] == RUN_ROLE
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_run_token(token, SECRET, now=issued + timedelta(days=1))
    with pytest.raises(jwt.InvalidSignatureError):
        verify_run_token(mint_run_token(SECRET, days=1), "t" * 40)


def test_the_keys_command_mints_a_token_from_the_environment_and_refuses_without_a_secret(tmp_path):
    from tests.test_cli_errors import cli, one_error_line

    p = cli(tmp_path, "keys", "run-token", "--days", "7", SUPABASE_JWT_SECRET=SECRET)
    assert p.returncode == 0, p.stderr
    # checked on the minting process's clock (this one may run shifted: --clock-shift)
    token = p.stdout.strip()
    minted = datetime.fromtimestamp(jwt.decode(token, options={"verify_signature": False})["iat"], timezone.utc)
    claims = verify_run_token(token, SECRET, now=minted)
    assert claims["exp"] - claims["iat"] == 7 * 86400
    assert "SUPABASE_JWT_SECRET" in one_error_line(cli(tmp_path, "keys", "run-token"), "invalid_setting", 2)
    assert "characters" in one_error_line(cli(tmp_path, "keys", "run-token", SUPABASE_JWT_SECRET="short"),
                                          "invalid_setting", 2)


@pytest.mark.shares_clock("its rows meet PostgreSQL's now(): a write stamped ahead of it is refused")
@pytest.mark.usefixtures("prefect_harness")
def test_a_whole_flow_run_with_the_run_login_writes_its_row_books_usage_and_the_guard_reads(
        pg_url, run_login, home, audio, monkeypatch):
    """The process-audio flow with the PostgreSQL status store and ledger as a run Machine has them: a login
    of the run role only. Every status write lands (the row ends COMPLETED at 100 %), usage rows are booked,
    and the quota guard's reads work: a user past their egress share is refused (an unreadable ledger would
    skip the guard and let the run complete)."""
    from flows.process_audio import process_audio
    from vibeinsight.settings import get_settings

    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "VIBEINSIGHT_QUOTA_LEDGER_URL", "VIBEINSIGHT_STATUS_PG_ROLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIBEINSIGHT_STATUS_URL", run_login)
    get_settings.cache_clear()  # importing the flow read the settings already
    user, sid = a_user(pg_url), str(uuid.uuid4())

    state = process_audio(source=as_upload(audio / "jfk.flac", user), session_id=sid, user_id=user, return_state=True)
    assert state.is_completed(), state.message
    assert admin_rows(pg_url, "select user_id::text, status, stage, progress, flow_run_id from processing_status "
                              "where session_id = %s", sid) == \
        [(user, "COMPLETED", "done", 100, str(state.state_details.flow_run_id))]
    kinds = {k for (k,) in admin_rows(pg_url, "select kind from usage_events where session_id = %s", sid)}
    assert {"storage_download", "status_write"} <= kinds, kinds

    # 2 GB of this user's Supabase egress this month: past the free plan's 25 % share for one user
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("insert into usage_events (session_id, kind, service, provider, bytes, meta) "
                     "values (%s, 'storage_download', 'supabase', 'supabase', %s, %s)",
                     (sid, 2 * 1024**3, psycopg.types.json.Jsonb({"user_id": user})))
    refused = str(uuid.uuid4())
    state = process_audio(source=as_upload(audio / "jfk.flac", user), session_id=refused, user_id=user,
                          return_state=True)
    assert state.is_failed()
    assert admin_rows(pg_url, "select status, error_code from processing_status where session_id = %s", refused) == \
        [("FAILED", "quota_exceeded")]


def test_run_login_creates_a_member_login_and_rotates_its_password(pg_url, tmp_path):
    from tests.test_cli_errors import cli, one_error_line

    name = f"vi_login_{uuid.uuid4().hex[:10]}"
    try:
        first = cli(tmp_path, "keys", "run-login", "--name", name, VIBEINSIGHT_ADMIN_DB_URL=pg_url)
        assert first.returncode == 0, first.stderr
        url = first.stdout.strip()
        assert urlsplit(url).username == name and urlsplit(url).path == urlsplit(pg_url).path
        sid = str(uuid.uuid4())
        assert PostgresStatusStore(url=url).apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=1))
        with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from public.processing_status")
        (old_password,) = admin_rows(pg_url, "select rolpassword from pg_authid where rolname = %s", name)[0]
        again = cli(tmp_path, "keys", "run-login", "--name", name, VIBEINSIGHT_ADMIN_DB_URL=pg_url)
        assert again.returncode == 0 and again.stdout.strip() != url
        assert admin_rows(pg_url, "select rolpassword <> %s, rolcanlogin, rolsuper from pg_authid where rolname = %s",
                          old_password, name) == [(True, True, False)]
        assert admin_rows(pg_url, "select b.rolname from pg_auth_members m join pg_roles r on r.oid = m.member "
                                  "join pg_roles b on b.oid = m.roleid where r.rolname = %s", name) == [(RUN_ROLE,)]
        assert "VIBEINSIGHT_ADMIN_DB_URL" in one_error_line(cli(tmp_path, "keys", "run-login"), "invalid_setting", 2)
        assert "--name" in one_error_line(cli(tmp_path, "keys", "run-login", "--name", "x; drop table y",
                                              VIBEINSIGHT_ADMIN_DB_URL=pg_url), "invalid_argument", 2)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
