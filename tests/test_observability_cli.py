"""`vibeinsight process` as a real process on the cloud backends (SeaweedFS S3, OpenAI and Gemini
stand-ins with the real SDKs) with LOG_FORMAT=json and ENABLE_TRACING=true exporting to an OTLP/HTTP
receiver in the test: every stderr line is a JSON object with the session's trace id and no secret,
and the spans form the session's trace. Gemini refuses every call, so the run also shows analysis
degrading (COMPLETED, analysis_degraded, the error code on the span and in the document)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.fake_gemini import FakeGemini, quota_exhausted
from tests.fake_openai import FakeOpenAI, rate_limited
from tests.otlp_receiver import OTLPReceiver
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

USER = "5c2d7e10-3a4b-4c5d-8e6f-7a8b9c0d1e2f"  # a run reads only uploads/<user_id>/…
SECRETS = {"OPENAI_API_KEY": "sk-obs-test-7f3a9c2e51d8", "GEMINI_API_KEY": "AIza-obs-test-4b8e1d6f90a2"}


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory, s3_server, audio):
    """One CLI run; its session id, exit code, stdout document, stderr lines and exported spans."""
    tmp = tmp_path_factory.mktemp("obs")
    recording = tmp / "call.wav"  # ~75 s: three 30 s chunks
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "6", "-i", str(audio / "ja_meeting.flac"), "-ac", "1",
                    str(recording)], check=True)
    store = s3_server.bucket("vibeinsight-audio")
    store.upload_file(recording, f"uploads/{USER}/call.wav", "audio/wav")
    session = str(uuid.uuid4())
    with FakeOpenAI() as oa, FakeGemini() as gm, OTLPReceiver() as rx:
        oa.plan = [rate_limited("0")]  # one retried chunk request
        gm.plan = [quota_exhausted("0s")] * 20  # Gemini never answers: analysis degrades
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OTEL_"))}
        env.update(**s3_server.env(), **SECRETS, VIBEINSIGHT_HOME=str(tmp / "home"),
                   OPENAI_BASE_URL=oa.url + "/v1", GOOGLE_GEMINI_BASE_URL=gm.url, VIBEINSIGHT_OPENAI_CHUNK_S="30",
                   VIBEINSIGHT_GEMINI_ATTEMPTS="3", LOG_FORMAT="json", LOG_LEVEL="INFO", ENABLE_TRACING="true",
                   OTEL_EXPORTER_OTLP_ENDPOINT=rx.endpoint, OTEL_SERVICE_NAME="vibeinsight-test")
        env.pop("GOOGLE_API_KEY", None)
        p = subprocess.run([sys.executable, "-m", "vibeinsight", "process", f"s3://vibeinsight-audio/uploads/{USER}/call.wav",
                            "--session-id", session, "--user-id", USER, "--language", "ja", "--json"],
                           capture_output=True, text=True, env=env, timeout=600)
        wait_for(lambda: any(s["attributes"].get("prefect.run.type") == "flow" for s in rx.spans), timeout=10)
        return {"session": session, "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
                "spans": list(rx.spans), "openai_requests": len(oa.requests), "gemini_requests": len(gm.requests)}


def test_json_logs_carry_the_session_trace_id_and_no_secret(traced_run):
    assert traced_run["rc"] == 0, traced_run["stderr"][-3000:]
    lines = traced_run["stderr"].splitlines()
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    trace_id = uuid.UUID(traced_run["session"]).hex
    assert all(r["trace_id"] == trace_id and r["session_id"] == traced_run["session"] for r in records)
    assert all({"ts", "level", "logger", "msg", "flow_run_id", "stage"} <= set(r) for r in records)
    doc = json.loads(traced_run["stdout"])
    loggers = {r["logger"] for r in records}
    assert {"prefect.flow_runs", "prefect.task_runs", "vibeinsight.flow"} <= loggers
    assert any(r["flow_run_id"] == doc["flow_run_id"] for r in records)
    # a line logged inside a stage names it
    degraded = [r for r in records if r["logger"] == "vibeinsight.flow" and "degraded" in r["msg"]]
    assert degraded and degraded[0]["error_code"] == "api_rate_limited"
    for value in SECRETS.values():
        assert value not in traced_run["stderr"] and value not in traced_run["stdout"]


def test_degraded_analysis_completes_with_the_error_code(traced_run):
    doc = json.loads(traced_run["stdout"])
    assert doc["status"] == "COMPLETED" and "analysis_degraded" in doc["warnings"]
    assert doc["analysis"]["error"]["code"] == "api_rate_limited" and doc["analysis"]["engine"] == "local-metrics"
    assert doc["transcript"]["segments"]  # the paid transcript is kept
    assert doc["usage"]["api_calls"]["gemini"] == 3 == traced_run["gemini_requests"]
    assert doc["usage"]["failed_calls"]["gemini"] == 3 and doc["usage"]["failed_services"] == ["gemini"]


def test_spans_form_the_sessions_trace(traced_run):
    spans = traced_run["spans"]
    session = uuid.UUID(traced_run["session"])
    root = session.hex[16:]  # the session's implicit root span
    assert {s["trace_id"] for s in spans} == {session.hex}
    assert {s["resource"]["service.name"] for s in spans} == {"vibeinsight-test"}
    by_id = {s["span_id"]: s for s in spans}
    assert all(s["parent_id"] in by_id or s["parent_id"] == root for s in spans), "orphan spans"

    def named(prefix: str) -> list[dict]:
        return [s for s in spans if s["name"].startswith(prefix)]

    def parent(s: dict) -> dict:
        return by_id[s["parent_id"]]

    (flow,) = [s for s in spans if s["attributes"].get("prefect.run.type") == "flow"]
    assert flow["parent_id"] == root
    tasks = {s["name"].rsplit("-", 1)[0]: s for s in spans if s["attributes"].get("prefect.run.type") == "task"}
    assert {"ingest", "transcode", "analyze", "publish", "transcribe-chunk"} <= set(tasks)
    for stage in ("ingest", "transcode", "analyze", "publish"):
        (span,) = named(f"stage.{stage}")
        assert parent(span)["name"].startswith(stage) and parent(parent(span)) is flow
    (transcribe,) = named("stage.transcribe")
    assert parent(transcribe) is flow

    doc = json.loads(traced_run["stdout"])
    chunks = named("chunk")
    assert sorted(c["attributes"]["vibeinsight.chunk"] for c in chunks) == [c["index"] for c in doc["transcode"]["chunks"]]
    assert all(parent(c)["name"].startswith("transcribe-chunk") and parent(parent(c)) is transcribe for c in chunks)
    calls = named("openai.transcription")
    assert len(calls) == len(chunks) and all(parent(c)["name"] == "chunk" for c in calls)
    assert sum(c["attributes"]["vibeinsight.calls"] for c in calls) == traced_run["openai_requests"] == len(chunks) + 1
    (retried,) = [c for c in calls if c["attributes"]["vibeinsight.retries"] == 1]
    assert "retry" in retried["events"] and retried["attributes"]["vibeinsight.bytes_sent"] > 0

    (gemini,) = named("gemini.")
    assert parent(gemini)["name"] == "stage.analyze"
    assert gemini["attributes"]["error.code"] == "api_rate_limited" and gemini["status"] == 2  # STATUS_CODE_ERROR
    assert gemini["attributes"]["vibeinsight.calls"] == 3

    (get,) = named("storage.get")
    assert parent(get)["name"] == "stage.ingest" and get["attributes"]["vibeinsight.bytes"] == doc["source"]["bytes"]
    assert any(parent(s)["name"] == "stage.publish" for s in named("storage.put"))
    writes = named("status.write")
    assert {"RUNNING", "COMPLETED"} <= {w["attributes"]["vibeinsight.status"] for w in writes}
