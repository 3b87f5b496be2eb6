"""Every billed call reaches the result document's usage and the ledger, failed or not: a Gemini that
fails every call degrades the analysis (COMPLETED) and lowers the ledger's success rate; a chunk
that fails for good fails the run, and every call of every chunk is still counted. Real Prefect API
(prefect_harness), SeaweedFS S3, OpenAI and Gemini stand-ins with the real SDKs."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.fake_gemini import quota_exhausted
from tests.fake_openai import error, rate_limited
from tests.operator_log import operator_log
from tests.test_cloud_flow import U1, cloud, recording, run_flow  # noqa: F401 - fixtures shared with the cloud flow tests

pytestmark = pytest.mark.integration


def ledger_rows():
    from blocks import registry
    from vibeinsight.metrics import live_metrics

    now = datetime.now(timezone.utc)
    events = registry.usage_ledger().events(now - timedelta(hours=1), now + timedelta(minutes=1))
    return events, live_metrics(events)


def test_gemini_failing_every_call_completes_degraded_and_counts_its_calls(cloud, recording, monkeypatch):  # noqa: F811
    store, oa, gm = cloud
    monkeypatch.setenv("VIBEINSIGHT_GEMINI_ATTEMPTS", "3")
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    gm.plan = [quota_exhausted("0s")] * 50
    store.upload_file(recording, f"uploads/{U1}/degraded.wav", "audio/wav")
    sid = str(uuid.uuid4())
    with operator_log() as lines:
        state = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/degraded.wav", sid)
    assert state.is_completed(), state.message
    doc = state.result()
    assert doc["status"] == "COMPLETED" and doc["warnings"] == ["analysis_degraded"] and doc["error"] is None
    err = doc["analysis"]["error"]
    assert (err["code"], err["stage"]) == ("api_rate_limited", "analyze") and err["message"] and "detail" not in err
    assert any("degraded at analyze" in line["msg"] and "gemini" in line["msg"] for line in lines)  # operators
    assert doc["analysis"]["engine"] == "local-metrics" and "speech_ratio" in doc["analysis"]
    assert doc["transcript"]["segments"] and doc["usage"]["api_calls"]["openai"] == len(doc["transcode"]["chunks"])
    u = doc["usage"]
    assert u["api_calls"]["gemini"] == len(gm.requests) == 3 and u["retries"]["gemini"] == 2
    assert u["failed_calls"] == {"gemini": 3} and u["failed_services"] == ["gemini"]
    stored = json.loads(store.get_bytes(f"results/{sid}.json"))
    assert stored["warnings"] == ["analysis_degraded"] and stored["status"] == "COMPLETED"

    events, metrics = ledger_rows()
    gem = events[(events["kind"] == "api_call") & (events["service"] == "gemini")]
    assert gem["calls"].sum() == 3 and not gem["m_ok"].any()
    assert metrics["gemini_success_rate"] < 1 and metrics["gemini_success_rate"] == 0.0
    assert metrics["api_error_rates"]["gemini"] == 1.0 and metrics["api_error_rates"]["openai"] == 0.0
    assert metrics["failed_runs"] == 0 and metrics["runs"] == 1

    # what an operator sees: `vibeinsight metrics --json` over the same ledger
    from typer.testing import CliRunner

    from vibeinsight.cli import app

    out = CliRunner().invoke(app, ["metrics", "--since", "1h", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["gemini_success_rate"] == 0.0 and shown["api_call_counts"]["gemini"] == 3 and shown["runs"] == 1


def test_a_chunk_failing_for_good_still_has_every_call_counted(cloud, recording):  # noqa: F811
    store, oa, gm = cloud
    # the first request is retried after a 429; the next one is refused for good (400): its chunk fails
    oa.plan = [rate_limited("0"), (400, {}, error("Invalid file format.", "invalid_request_error"))]
    store.upload_file(recording, f"uploads/{U1}/broken.wav", "audio/wav")
    sid = str(uuid.uuid4())
    state = run_flow(f"s3://vibeinsight-audio/uploads/{U1}/broken.wav", sid)
    assert state.is_failed()
    doc = json.loads(store.get_bytes(f"results/{sid}.json"))
    assert doc["status"] == "FAILED" and doc["error"]["code"] == "api_invalid_request"
    assert doc["error"]["stage"] == "transcribe"
    chunks = json.loads(store.get_bytes(f"results/{sid}.json"))["transcode"]["chunks"]
    u = doc["usage"]
    # every request the API saw is in the document: the failed chunk's two and the others' one each
    assert u["api_calls"]["openai"] == len(oa.requests) == len(chunks) + 1
    assert u["retries"]["openai"] == 1 and u["failed_calls"]["openai"] == 2
    assert u["bytes_sent"]["openai"] == sum(len(r["form"]["file"]["data"]) for r in oa.requests)
    assert not gm.requests  # no analysis of a failed transcript

    events, metrics = ledger_rows()
    oai = events[(events["kind"] == "api_call") & (events["service"] == "openai")]
    assert oai["calls"].sum() == len(chunks) + 1 and not oai["m_ok"].any()
    assert metrics["failures_by_code"] == {"api_invalid_request": 1}
    assert metrics["api_error_rates"]["openai"] == pytest.approx(2 / (len(chunks) + 1), abs=1e-4)
