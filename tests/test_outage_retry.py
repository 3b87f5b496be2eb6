"""Issue 20, point 6: storage and status-database calls ride out an outage of up to
VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S (60 s): the budget with an injected sleep (unit), a real S3 server
(SeaweedFS) stopped for ~10 s under a read and a write, and a real PostgreSQL stopped for a few
seconds under a status read (integration)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from vibeinsight.retry import outage_retrying


class Outage:
    """A call that fails with `error` until `down_s` of (injected) time has gone by, then answers."""

    def __init__(self, down_s: float, error: BaseException) -> None:
        self.down_s, self.error = down_s, error
        self.clock = 0.0
        self.calls = 0

    def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def __call__(self) -> str:
        self.calls += 1
        if self.clock < self.down_s:
            raise self.error
        return "answer"


def _passes(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError)


@pytest.mark.unit
@pytest.mark.parametrize("down_s", [10.0, 55.0])
def test_an_outage_within_the_budget_is_ridden_out(down_s):
    call = Outage(down_s, ConnectionRefusedError("refused"))
    assert outage_retrying(_passes, budget_s=60.0, sleep=call.sleep)(call) == "answer"
    assert call.calls > 2  # back-off, not one long wait
    assert down_s <= call.clock < down_s + 8.0  # the back-off is capped at 8 s


@pytest.mark.unit
def test_the_budget_comes_from_the_setting_and_past_it_the_last_error_is_raised(monkeypatch):
    monkeypatch.setenv("VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S", "60")
    call = Outage(10_000.0, ConnectionRefusedError("still refused"))
    with pytest.raises(ConnectionRefusedError, match="still refused"):
        outage_retrying(_passes, sleep=call.sleep)(call)
    assert 60.0 <= call.clock < 68.0  # gave up once 60 s of waiting had gone by, not before
    monkeypatch.setenv("VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S", "20")
    short = Outage(10_000.0, ConnectionRefusedError("refused"))
    with pytest.raises(ConnectionRefusedError):
        outage_retrying(_passes, sleep=short.sleep)(short)
    assert 20.0 <= short.clock < 28.0


@pytest.mark.unit
def test_an_error_that_will_not_pass_is_raised_at_once():
    call = Outage(10.0, PermissionError("denied"))
    with pytest.raises(PermissionError):
        outage_retrying(_passes, budget_s=60.0, sleep=call.sleep)(call)
    assert (call.calls, call.clock) == (1, 0.0)


@pytest.mark.unit
def test_storage_errors_that_may_pass_and_those_that_never_do():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from blocks.storage import _s3_errors, storage_may_pass
    from vibeinsight.errors import InputRejected, StorageFailed

    def converted(exc: Exception) -> BaseException:
        try:
            with _s3_errors("uploads/u/a.flac"):
                raise exc
        except (StorageFailed, InputRejected) as out:
            return out
        raise AssertionError("not converted")

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert storage_may_pass(converted(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")))
    assert storage_may_pass(converted(client_error("ServiceUnavailable", 503)))
    assert storage_may_pass(converted(client_error("SlowDown", 503)))
    assert not storage_may_pass(converted(client_error("NoSuchKey", 404)))
    assert not storage_may_pass(converted(client_error("AccessDenied", 403)))


@pytest.mark.unit
def test_status_store_errors_that_may_pass():
    import psycopg

    from blocks.status_store import status_may_pass

    assert status_may_pass(psycopg.OperationalError("connection refused"))
    assert not status_may_pass(psycopg.errors.CheckViolation("bad status"))
    assert not status_may_pass(ValueError("bad row"))


# --- real outages -------------------------------------------------------------------------------

def _back_after(seconds: float, start) -> threading.Thread:
    def later() -> None:
        time.sleep(seconds)
        start()
    t = threading.Thread(target=later, daemon=True)
    t.start()
    return t


@pytest.mark.integration
def test_a_ten_second_s3_outage_under_a_read_and_a_write_is_ridden_out(tmp_path):
    from tests.s3_server import WeedS3

    weed = WeedS3(tmp_path / "seaweedfs")
    try:
        store = weed.start().bucket("vibeinsight-audio")
        store.put_bytes("uploads/u/a.flac", b"audio bytes", "audio/flac")
        weed.stop()
        t0 = time.monotonic()
        back = _back_after(10.0, weed.start)
        assert store.get_bytes("uploads/u/a.flac") == b"audio bytes"  # waited for the server, then read
        assert time.monotonic() - t0 >= 10.0
        back.join()
        fetched = store.fetch("s3://vibeinsight-audio/uploads/u/a.flac", tmp_path / "work")
        assert fetched.path.read_bytes() == b"audio bytes"

        weed.stop()
        back = _back_after(10.0, weed.start)
        store.put_json("results/s.json", {"ok": True})  # a whole-object put: safe to send again
        back.join()
        assert store.get_bytes("results/s.json").startswith(b"{")
    finally:
        weed.stop()


@pytest.mark.integration
def test_a_status_read_rides_out_a_database_restart(tmp_path):
    from blocks.status_store import PostgresStatusStore
    from tests.fault_stack import PrivatePostgres
    from vibeinsight.schemas import Status, StatusUpdate

    pg = PrivatePostgres()
    try:
        pg.start()
        store = PostgresStatusStore(url=pg.status_database([]), pg_role="service_role", connect_timeout_s=2)
        sid = str(uuid.uuid4())
        assert store.apply(StatusUpdate(session_id=sid, status=Status.RUNNING, seq=1, flow_run_id="r"))
        pg._ctl("stop", "-m", "fast")
        with pytest.raises(Exception) as refused:  # the method itself fails fast …
            store.get(sid)
        back = _back_after(6.0, pg.start)
        t0 = time.monotonic()
        row = store.ride_out(lambda: store.get(sid), "a test read")  # … and ride_out waits for the database
        assert time.monotonic() - t0 >= 3.0, refused.value
        assert row is not None and row.status is Status.RUNNING
        back.join()
    finally:
        pg.stop()
