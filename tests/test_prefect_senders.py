"""tests.prefect_server.local_prefect and Prefect's event sender, which is one per process whatever the
API (its key holds no URL) and stays bound to the server it first sent to. A pytest worker runs many
modules one after another, each pointing this process at a server of its own: a sender left bound to a
stopped server once queued a later test's events behind 113 that each took a minute to fail."""

from __future__ import annotations

import uuid

import pytest

from tests.prefect_server import local_prefect
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _emit(name: str) -> str:
    from prefect.events import emit_event

    name = f"vibeinsight.test.{name}-{uuid.uuid4().hex[:8]}"
    assert emit_event(event=name, resource={"prefect.resource.id": f"vibeinsight.test.{uuid.uuid4()}"})
    return name


def _names(lp) -> set[str]:
    page = lp.post("/events/filter", {"filter": {"event": {"prefix": ["vibeinsight.test."]}}, "limit": 50})
    return {e["event"] for e in page["events"]}


@pytest.mark.shares_clock("the events' timestamps meet the Prefect server's clock")
def test_in_process_events_reach_the_server_in_use_and_no_sender_outlives_it(tmp_path):
    from prefect.events.worker import EventsWorker

    with local_prefect(tmp_path / "a", deploy=False) as a:
        first = _emit("first")  # the sender is now bound to server a
        wait_for(lambda: first in _names(a), 60, 0.5, "the first event, stored by server a")
        with local_prefect(tmp_path / "b", deploy=False) as b:
            inside = _emit("inside")
            wait_for(lambda: inside in _names(b), 60, 0.5, "the event emitted while b was in use, stored by b")
            sender_b = EventsWorker.instance()
        # b has stopped; a is in use again, and its events reach it
        again = _emit("again")
        wait_for(lambda: again in _names(a), 60, 0.5, "the event emitted after b stopped, stored by a")
        assert inside not in _names(a)
        assert EventsWorker.instance() is not sender_b
