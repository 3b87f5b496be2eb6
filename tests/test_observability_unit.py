"""Logs, traces, usage of failed calls and the monitoring metrics, as pure logic."""

from __future__ import annotations

import io
import json
import logging
import pickle
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from vibeinsight import logs, tracing
from vibeinsight.errors import PipelineError, TranscriptionFailed
from vibeinsight.metrics import live_metrics, parse_since
from vibeinsight.quota import to_frame
from vibeinsight.retry import Transient, metered_call
from vibeinsight.schemas import ErrorInfo, ResultDocument, Status
from vibeinsight.usage import ServiceUsage, build_usage, events_from_document

pytestmark = pytest.mark.unit

SID = "4a7b1c9d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"


def json_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_json_line_has_the_session_fields_and_masks_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit-secret-0123456789")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-unit-secret-9876543210")
    logs.secrets.cache_clear()
    logger, out = json_logger("vibeinsight.test.json")
    with logs.bind(session_id=SID, flow_run_id="fr-1"), logs.bind(stage="transcribe"):
        logger.info("calling with sk-unit-secret-0123456789 and %s", "AIza-unit-secret-9876543210")
        try:
            raise ValueError("bad key AIza-unit-secret-9876543210")
        except ValueError:
            logger.exception("failed")
    logger.warning("after the session")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["level"] for x in lines] == ["INFO", "ERROR", "WARNING"]
    first = lines[0]
    assert set(first) >= {"ts", "level", "logger", "msg", "session_id", "flow_run_id", "stage", "trace_id"}
    assert (first["session_id"], first["flow_run_id"], first["stage"]) == (SID, "fr-1", "transcribe")
    assert first["trace_id"] == uuid.UUID(SID).hex and first["logger"] == "vibeinsight.test.json"
    assert first["msg"] == "calling with *** and ***"
    assert "ValueError" in lines[1]["exc"]
    assert "unit-secret-0123456789" not in out.getvalue() and "unit-secret-9876543210" not in out.getvalue()
    assert lines[2]["session_id"] is None and lines[2]["trace_id"] is None  # unbound again
    logs.secrets.cache_clear()


def test_trace_id_is_the_uuid_and_stable_for_other_ids():
    assert logs.trace_id_hex(SID) == SID.replace("-", "")
    other = logs.trace_id_hex("not-a-uuid")
    assert other == logs.trace_id_hex("not-a-uuid") and len(other) == 32 and other != logs.trace_id_hex("x")
    assert tracing.session_trace_id(SID) == uuid.UUID(SID).int
    tp = tracing.traceparent(SID)
    assert tp == f"00-{uuid.UUID(SID).hex}-{uuid.UUID(SID).hex[16:]}-01"


def test_trigger_label_is_prefects_traceparent_label():
    from prefect.telemetry.run_telemetry import LABELS_TRACEPARENT_KEY

    from deployments.trigger import LABELS_TRACEPARENT_KEY as ours

    assert ours == LABELS_TRACEPARENT_KEY


def test_text_format_masks_secrets_too(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role-unit-secret")
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    logs.secrets.cache_clear()
    fmt = logs.console_formatter(format="%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=service-role-unit-secret", None, None)
    assert fmt.format(record) == "INFO key=***"
    get_settings.cache_clear()
    logs.secrets.cache_clear()


def test_metered_call_counts_failed_tries_and_hands_back_usage():
    usage = ServiceUsage(service="openai", model="whisper-1")
    answers = iter([Transient("busy", 0, 503), ValueError("rejected")])

    def call():
        raise next(answers)

    def classify(exc):
        return exc if isinstance(exc, Transient) else TranscriptionFailed(str(exc), "api_invalid_request")

    with pytest.raises(TranscriptionFailed) as info:
        metered_call(call, usage, classify, attempts=3, error=TranscriptionFailed, sleep=lambda s: None)
    assert (usage.calls, usage.retries, usage.failed) == (2, 1, 2)
    assert info.value.usage is usage
    # the usage survives pickling, as Prefect persists a failed task's exception
    again = pickle.loads(pickle.dumps(info.value))
    assert again.code == "api_invalid_request" and again.usage.failed == 2


def test_out_of_tries_is_rate_limited_with_its_usage():
    usage = ServiceUsage(service="gemini")

    def call():
        raise Transient("429", 0, 429)

    with pytest.raises(PipelineError) as info:
        metered_call(call, usage, lambda e: e, attempts=3, error=PipelineError, sleep=lambda s: None)
    assert info.value.code == "api_rate_limited" and info.value.usage.calls == 3 and usage.failed == 3


def _doc(status=Status.COMPLETED, error=None, services=(), audio=60.0, timings=None) -> ResultDocument:
    usage = build_usage(bytes_in=1000, bytes_transcoded=100, bytes_out=10, audio_seconds=audio, services=services)
    return ResultDocument(session_id=str(uuid.uuid4()), status=status, usage=usage, error=error,
                          timings=timings or {"transcribe": audio / 4})


def test_a_degraded_gemini_and_failed_calls_reach_the_ledger_rows():
    gem = ServiceUsage(service="gemini", calls=5, retries=4, failed=5, gave_up=True)
    doc = _doc(services=[gem, ServiceUsage(service="openai", calls=2, audio_seconds=60)])
    assert doc.usage.failed_calls == {"gemini": 5} and doc.usage.failed_services == ["gemini"]
    rows = {e.service: e for e in events_from_document(doc) if e.kind == "api_call"}
    assert rows["gemini"].calls == 5 and rows["gemini"].meta["ok"] is False and rows["gemini"].meta["failed_calls"] == 5
    assert rows["openai"].meta["ok"] is True and rows["openai"].meta["failed_calls"] == 0


def test_live_metrics_over_ledger_rows():
    now = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    docs = [
        _doc(services=[ServiceUsage(service="gemini", calls=2, tokens={"gemini_input": 10})], audio=60,
             timings={"transcribe": 30}),
        _doc(services=[ServiceUsage(service="gemini", calls=5, failed=5, gave_up=True)], audio=120,
             timings={"transcribe": 120}),
        _doc(Status.FAILED, ErrorInfo(code="api_invalid_request", message="x", stage="transcribe"),
             [ServiceUsage(service="openai", calls=4, failed=1, audio_seconds=180)], audio=180, timings={"transcribe": 90}),
    ]
    rows = [e.model_dump() for i, d in enumerate(docs) for e in events_from_document(d, at=now - timedelta(hours=i))]
    rows.append({"session_id": None, "kind": "realtime_message", "service": "realtime", "bytes": 0, "calls": 1,
                 "retries": 0, "tokens": 0, "audio_seconds": 0, "cost_usd": 0, "at": now,
                 "meta": {"error": "too_many_connections"}})
    old = events_from_document(_doc(Status.FAILED, ErrorInfo(code="corrupt", message="x", stage="ingest")),
                               at=now - timedelta(days=3))
    frame = to_frame(rows + [e.model_dump() for e in old])
    m = live_metrics(frame, now - timedelta(hours=24), now + timedelta(seconds=1))
    assert m["runs"] == 3 and m["failed_runs"] == 1 and m["failures_by_code"] == {"api_invalid_request": 1}
    assert m["gemini_success_rate"] == 0.5  # the degraded run counts as a failure
    assert m["api_call_counts"] == {"gemini": 7, "openai": 4}
    assert m["api_error_rates"]["gemini"] == pytest.approx(5 / 7, abs=1e-4)
    assert m["api_error_rates"]["openai"] == 0.25
    # seconds of processing per audio minute: 30/1, 120/2, 90/3
    assert m["processing_s_per_audio_minute"]["p50"] == 30.0
    assert m["processing_s_per_audio_minute"]["p95"] == pytest.approx(30 + 0.9 * 30, abs=1e-3)
    assert m["avg_processing_s"] == 80.0 and m["realtime_connection_failures"] == 1
    assert m["audio_minutes"] == 6.0
    assert m["cost_per_audio_hour_usd"] == pytest.approx(m["cost_usd"] / 0.1, abs=1e-6) and m["cost_usd"] > 0
    everything = live_metrics(frame)
    assert everything["runs"] == 4 and everything["failures_by_code"] == {"api_invalid_request": 1, "corrupt": 1}


def test_parse_since():
    assert [parse_since(x) for x in ("24h", "7d", "90m", "30s", "15")] == [86400, 604800, 5400, 30, 15]
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_a_commands_error_line_is_json_in_json_mode(monkeypatch, capsys):
    from vibeinsight.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit-secret-cli-4455")
    for fmt in ("json", "text"):
        monkeypatch.setenv("LOG_FORMAT", fmt)
        get_settings.cache_clear()
        logs.secrets.cache_clear()
        logs.cli_error("invalid_argument", "bad key sk-unit-secret-cli-4455")
    get_settings.cache_clear()
    logs.secrets.cache_clear()
    first, second = capsys.readouterr().err.splitlines()
    record = json.loads(first)
    assert (record["level"], record["logger"], record["error_code"]) == ("ERROR", "vibeinsight.cli", "invalid_argument")
    assert record["msg"] == "invalid_argument: bad key ***"
    assert second == "error: invalid_argument: bad key ***"
