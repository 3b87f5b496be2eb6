"""The deployment path: `vibeinsight trigger` → a real Prefect server → a process worker, with
LOG_FORMAT=json and ENABLE_TRACING=true. The worker's flow run joins the session's trace through the
traceparent label the trigger sets, and the flow run's log lines in the worker's output are JSON
with the session's trace id."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.otlp_receiver import OTLPReceiver
from tests.prefect_server import FAST_WORKERS, local_prefect
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_worker_run_is_in_the_sessions_trace_and_logs_json(tmp_path, audio):
    from deployments.trigger import trigger

    with OTLPReceiver() as rx:
        env = {**FAST_WORKERS, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "ENABLE_TRACING": "true",
               "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_SERVICE_NAME": "vibeinsight-worker"}
        with local_prefect(tmp_path, workers=1, env=env) as lp:
            sid = str(uuid.uuid4())
            t = trigger(str(audio / "hotwords.mp3"), session_id=sid, language="en", api_url=lp.api_url)
            run = lp.wait_run(t.flow_run_id)
            assert run["state"]["type"] == "COMPLETED", run["state"]
            assert run["labels"]["__OTEL_TRACEPARENT"].split("-")[1] == uuid.UUID(sid).hex
            session = uuid.UUID(sid)

            def flow_span():
                return [s for s in rx.spans if s["attributes"].get("prefect.run.type") == "flow"
                        and s["trace_id"] == session.hex]

            (flow,) = wait_for(flow_span, 60, what="the flow run's span")

            # A run created without the label (from the UI, say): Prefect's flow and task spans are in
            # a trace of Prefect's own, while our stage, chunk and call spans are in the session's.
            other = str(uuid.uuid4())
            dep = lp.get("/deployments/name/process-audio/api")
            from blocks.storage import LocalBucket

            placed = LocalBucket(root=str(lp.home / "bucket")).place_upload(str(audio / "hotwords.mp3"))
            raw = lp.post(f"/deployments/{dep['id']}/create_flow_run", {"parameters": {
                "source": placed, "session_id": other, "language": "en"}})
            assert lp.wait_run(raw["id"])["state"]["type"] == "COMPLETED"
            other_hex = uuid.UUID(other).hex
            wait_for(lambda: any(s["name"] == "stage.publish" and s["trace_id"] == other_hex for s in rx.spans)
                     and any(s["attributes"].get("prefect.run.id") == raw["id"] for s in rx.spans), 60,
                     what="the unlabelled run's spans, its flow span included (exported in a later batch)")
            worker_log = lp.log("worker-1")
            spans = list(rx.spans)

    assert flow["parent_id"] == session.hex[16:]  # under the session's root, as the label said
    assert flow["resource"]["service.name"] == "vibeinsight-worker"
    mine = [s for s in spans if s["trace_id"] == session.hex]
    names = {s["name"] for s in mine}
    assert {"stage.ingest", "stage.transcode", "stage.transcribe", "stage.analyze", "stage.publish", "chunk"} <= names
    assert sum(1 for s in mine if s["attributes"].get("prefect.run.type") == "task") >= 5

    theirs = [s for s in spans if s["trace_id"] == other_hex]
    assert {"stage.ingest", "stage.transcode", "stage.transcribe", "stage.analyze", "stage.publish",
            "chunk"} <= {s["name"] for s in theirs}
    assert all(s["parent_id"] == other_hex[16:] for s in theirs if s["name"].startswith("stage."))
    (their_flow,) = [s for s in spans if s["attributes"].get("prefect.run.id") == raw["id"]]
    assert their_flow["trace_id"] != other_hex

    records = []
    for line in worker_log.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the worker's start-up banner is printed, not logged
    of_run = [r for r in records if r.get("flow_run_id") == t.flow_run_id]
    assert len(of_run) >= 5, worker_log[-3000:]
    in_session = [r for r in of_run if r["session_id"] is not None]
    assert len(in_session) >= 5 and all(r["session_id"] == sid and r["trace_id"] == session.hex for r in in_session)
    assert {"prefect.flow_runs", "prefect.task_runs"} <= {r["logger"] for r in in_session}
    assert any(r["msg"].startswith("Finished in state") for r in in_session)  # after the run's context closed
    # Only lines written before the run's parameters were read (the worker submitting it, loading
    # the flow code, its pull steps) lack the session; they name the flow run and claim no trace.
    before = [r for r in of_run if r["session_id"] is None]
    assert all(r["trace_id"] is None and r["logger"].startswith("prefect.flow_runs") for r in before), before
    first_in_session = of_run.index(in_session[0])
    assert all(of_run.index(r) < first_in_session for r in before if r["logger"] != "prefect.flow_runs.worker"), before
