"""The status observer's event handling: mapping, de-duplication, ordering, retries (no server)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prefect.events.schemas.events import Event

from blocks.status_store import SQLiteStatusStore
from deployments.status_observer import RunSession, StatusObserver
from vibeinsight.errors import user_message
from vibeinsight.schemas import Status, StatusUpdate
from vibeinsight.status_rule import seq_of

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 1, 0, 0, tzinfo=timezone.utc)


def _event(run_id: str, state_type: str, at: datetime, message: str = "", event_id=None) -> Event:
    name = state_type.title()
    return Event(
        id=event_id or uuid.uuid4(), occurred=at, event=f"prefect.flow-run.{name}",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": "calm-fox",
                  "prefect.state-type": state_type, "prefect.state-name": name, "prefect.state-message": message,
                  "prefect.state-timestamp": at.isoformat()},
        related=[{"prefect.resource.id": f"prefect.deployment.{uuid.uuid4()}", "prefect.resource.role": "deployment",
                  "prefect.resource.name": "process-audio/prod"}])


class RecordingStore(SQLiteStatusStore):
    """The SQLite store, also keeping what was sent and able to fail the first writes."""

    _block_type_name = "Test Recording Status Store"

    def model_post_init(self, __context) -> None:
        self.__dict__["sent"] = []
        self.__dict__["fail_first"] = 0

    def apply(self, update, deployment=None):
        if self.__dict__["fail_first"] > 0:
            self.__dict__["fail_first"] -= 1
            raise ConnectionError("store down")
        self.__dict__["sent"].append((update, deployment))
        return super().apply(update, deployment)


def _observer(tmp_path, runs: dict, prefect: dict | None = None, **kw) -> tuple[StatusObserver, RecordingStore]:
    """`prefect`: each run's (state type, timestamp) as the Prefect API answers the observer's check."""
    store = RecordingStore(path=str(tmp_path / "s.db"))
    prefect = {} if prefect is None else prefect

    async def read_state(run_id):
        return prefect.get(run_id)

    obs = StatusObserver(store=store, backoff_s=0.01, read_state=read_state, **kw)
    obs._runs.update(runs)  # the flow-run parameters the observer would read from the API
    return obs, store


def test_transitions_are_written_as_they_arrive_the_latest_state_time_wins_and_replays_are_skipped(tmp_path):
    run, sid = str(uuid.uuid4()), str(uuid.uuid4())
    obs, store = _observer(tmp_path, {run: RunSession(sid, "u1")}, {run: ("CRASHED", T0 + timedelta(seconds=9))},
                           terminal_grace_s=0)
    pending = _event(run, "PENDING", T0)
    running = _event(run, "RUNNING", T0 + timedelta(seconds=1))
    crashed = _event(run, "CRASHED", T0 + timedelta(seconds=9), "Process exited with -9")

    async def go():
        for ev in (pending, crashed, running, crashed, pending):  # out of order, with replays
            await obs.handle(ev)

    asyncio.run(go())
    # each distinct event written once, in arrival order, its seq from the state's own time…
    assert [(u.status, u.seq) for u, _ in store.sent] == [
        (Status.PENDING, seq_of(T0)), (Status.CRASHED, seq_of(T0 + timedelta(seconds=9))),
        (Status.RUNNING, seq_of(T0 + timedelta(seconds=1)))]
    assert all(d == "process-audio/prod" for _, d in store.sent)
    # …so the late RUNNING (an earlier state time) does not replace the CRASHED row
    row = store.get(sid)
    assert row.status is Status.CRASHED and row.seq == seq_of(T0 + timedelta(seconds=9))
    assert row.error_code == "crashed" and row.error_message == user_message("crashed") and row.user_id == "u1"


def test_flows_without_a_session_and_passing_states_are_skipped(tmp_path):
    run, other = str(uuid.uuid4()), str(uuid.uuid4())
    obs, store = _observer(tmp_path, {other: None, run: RunSession("s", None)})
    asyncio.run(obs.handle(_event(other, "RUNNING", T0)))
    asyncio.run(obs.handle(_event(run, "CANCELLING", T0)))
    assert store.sent == [] and obs.skipped == 2


def test_completion_waits_out_the_grace_so_the_hooks_record_wins(tmp_path):
    run, sid = str(uuid.uuid4()), str(uuid.uuid4())
    obs, store = _observer(tmp_path, {run: RunSession(sid, None)}, {run: ("FAILED", T0)}, terminal_grace_s=0.2)

    async def go():
        await obs.handle(_event(run, "FAILED", T0, "Flow run encountered an exception"))
        assert store.sent == []  # not yet: the hook may still write the reason code
        # meanwhile the flow's failure hook writes its richer record (a later seq, same run)
        store.apply(StatusUpdate(session_id=sid, status=Status.FAILED, seq=seq_of(T0) + 500, flow_run_id=run,
                                 error_code="corrupt", error_message="bad header"))
        await obs.drain()

    asyncio.run(go())
    # after drain() the observer's delayed FAILED was sent (second, after the hook's)…
    assert [(u.status, u.seq, u.error_code) for u, _ in store.sent] == [
        (Status.FAILED, seq_of(T0) + 500, "corrupt"), (Status.FAILED, seq_of(T0), "failed")]
    row = store.get(sid)
    assert row.error_code == "corrupt" and row.seq == seq_of(T0) + 500  # …and lost to the hook's later record


def test_a_down_store_is_retried_until_it_answers(tmp_path):
    run, sid = str(uuid.uuid4()), str(uuid.uuid4())
    obs, store = _observer(tmp_path, {run: RunSession(sid, None)}, {run: ("COMPLETED", T0)}, terminal_grace_s=0)
    store.__dict__["fail_first"] = 3
    asyncio.run(obs.handle(_event(run, "COMPLETED", T0)))
    assert store.__dict__["fail_first"] == 0 and len(store.sent) == 1  # three refused tries, then the write
    row = store.get(sid)
    assert row.status is Status.COMPLETED and row.progress == 100 and row.result_key == f"results/{sid}.json"


def test_seq_of_matches_the_writers_clock():
    assert seq_of("2026-11-29T01:00:00.000123+00:00") == int(T0.timestamp()) * 1_000_000 + 123


def test_the_rows_sentence_is_in_the_runs_language(tmp_path):
    ja_run, en_run, sid_ja, sid_en = (str(uuid.uuid4()) for _ in range(4))
    obs, store = _observer(tmp_path, {ja_run: RunSession(sid_ja, None, "ja"), en_run: RunSession(sid_en, None, "auto")},
                           {ja_run: ("CRASHED", T0), en_run: ("CRASHED", T0)}, terminal_grace_s=0)

    async def go():
        await obs.handle(_event(ja_run, "CRASHED", T0, "Process exited with -9"))
        await obs.handle(_event(en_run, "CRASHED", T0, "Process exited with -9"))

    asyncio.run(go())
    assert store.get(sid_ja).error_message == user_message("crashed", "ja") != user_message("crashed")
    assert store.get(sid_en).error_message == user_message("crashed")


def test_a_fanned_out_part_run_never_writes_the_sessions_row(tmp_path):
    """transcribe-part runs carry the session's id (the ledger books them under it) but the row is the
    parent's alone: their events are skipped, whatever their state."""
    part, parent, sid = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    obs, store = _observer(tmp_path, {part: RunSession(sid, "u1"), parent: RunSession(sid, "u1")},
                           terminal_grace_s=0)

    def flow_event(run_id: str, state_type: str, flow: str) -> Event:
        ev = _event(run_id, state_type, T0)
        return ev.model_copy(update={"related": [*ev.related, {"prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
                                                               "prefect.resource.role": "flow",
                                                               "prefect.resource.name": flow}]})

    async def go():
        for state_type in ("RUNNING", "CRASHED", "COMPLETED"):
            await obs.handle(flow_event(part, state_type, "transcribe-part"))
        await obs.handle(flow_event(parent, "RUNNING", "process-audio"))

    asyncio.run(go())
    assert [(u.flow_run_id, u.status) for u, _ in store.sent] == [(parent, Status.RUNNING)]
    assert obs.skipped == 3
