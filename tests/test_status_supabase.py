"""The Supabase status store: supabase-py → PostgREST RPC (faked at the HTTP layer) → real PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import postgrest
import pytest

from blocks.status_store import SupabaseStatusStore
from tests.fake_postgrest import FakePostgrest
from tests.waiting import wait_for
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.throttle import CoalescingWriter

pytestmark = pytest.mark.integration


@pytest.fixture()
def postgrest_server(pg_url):
    with FakePostgrest(pg_url) as server:
        yield server


def _store(server: FakePostgrest) -> SupabaseStatusStore:
    return SupabaseStatusStore(url=server.url, service_role_key=server.service_key)


def test_rpc_request_is_postgrests_and_the_rule_holds(postgrest_server):
    store = _store(postgrest_server)
    sid, run = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=100, flow_run_id=run, stage="ingest",
                                    progress=1), deployment="process-audio/default") is True
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=50, stage="transcode", progress=9)) is False
    assert store.apply(StatusUpdate(session_id=sid, status=Status.COMPLETED, seq=200, flow_run_id=run, progress=100,
                                    result_key=f"results/{sid}.json")) is True
    assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=300, flow_run_id=run)) is False

    sent = postgrest_server.requests[0]
    assert sent["method"] == "POST" and sent["path"] == "/rest/v1/rpc/apply_status_update"
    assert sent["headers"]["apikey"] == postgrest_server.service_key
    assert sent["headers"]["authorization"] == f"Bearer {postgrest_server.service_key}"
    assert sent["body"] == {
        "p_session_id": sid, "p_status": "RUNNING", "p_seq": 100, "p_user_id": None, "p_flow_run_id": run,
        "p_deployment": "process-audio/default", "p_stage": "ingest", "p_progress": 1, "p_error_code": None,
        "p_error_message": None, "p_result_key": None, "p_attempt": None, "p_max_ahead_s": None}
    assert all(len(r["path"]) + len(str(r["body"])) < 1024 for r in postgrest_server.requests)

    row = store.get(sid)
    assert (row.status, row.progress, row.stage, row.result_key, row.seq) == (
        Status.COMPLETED, 100, "ingest", f"results/{sid}.json", 200)
    get_req = postgrest_server.requests[-1]
    assert get_req["method"] == "GET" and f"session_id=eq.{sid}" in get_req["path"]


def test_open_rows_filter_is_sent_as_postgrest_in(postgrest_server):
    store = _store(postgrest_server)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    store.apply(StatusUpdate(session_id=a, status=Status.PENDING, seq=1, flow_run_id="r"))
    store.apply(StatusUpdate(session_id=b, status=Status.CRASHED, seq=1, flow_run_id="r"))
    assert [r.session_id for r in store.open_rows()] == [a]
    assert "status=in.%28PENDING%2CRUNNING%29" in postgrest_server.requests[-1]["path"] or \
        "status=in.(PENDING,RUNNING)" in postgrest_server.requests[-1]["path"]


def test_anon_key_cannot_call_the_function(postgrest_server):
    store = SupabaseStatusStore(url=postgrest_server.url, service_role_key=postgrest_server.anon_key)
    with pytest.raises(postgrest.APIError) as err:
        store.apply(StatusUpdate(session_id=str(uuid.uuid4()), status=Status.RUNNING, seq=1))
    assert err.value.code == "42501"


def test_gateway_down_surfaces_as_an_error_the_writer_retries(postgrest_server):
    """The store raises on a 503 (never reports success), and the run's writer (CoalescingWriter, as
    flows/status_hooks.py wires it) retries the terminal update until the gateway is back."""
    store = _store(postgrest_server)
    sid = str(uuid.uuid4())
    postgrest_server.down = True
    with pytest.raises(postgrest.APIError):
        store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=1))

    writer = CoalescingWriter(store.apply, min_interval=0.01, backoff=0.01, max_backoff=0.05)
    refused = lambda: sum(r["path"].endswith("/apply_status_update") for r in postgrest_server.requests)  # noqa: E731
    before = refused()
    done = StatusUpdate(session_id=sid, status=Status.COMPLETED, seq=2, progress=100, result_key=f"results/{sid}.json")

    def bring_back():  # by event order: once the writer has been refused twice more, the gateway returns
        wait_for(lambda: refused() >= before + 2, 30, 0.01, "two refused writes")
        postgrest_server.down = False

    back = threading.Thread(target=bring_back)
    back.start()
    assert writer.final(done, wait_s=60) is True
    back.join()
    assert writer.failures >= 2 and writer.writes == 1
    assert store.get(sid).status is Status.COMPLETED
