"""Users read codes and fixed sentences; operators read details (issue 19, point 4).

A run that fails because the transcription API answers 500 with a revealing message (an internal
host, an organisation id, the run's own key echoed back): the result document and the status row
carry the code and its fixed sentence only; the run's log carries the detail, with the key masked.
Real Prefect API (prefect_harness), the local bucket and status store, the OpenAI stand-in.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fake_openai import FakeOpenAI, error
from tests.operator_log import messages, operator_log
from tests.uploads import as_upload

pytestmark = pytest.mark.integration

KEY = "sk-detail-test-7c1f3e9a"
REVEALING = (f"The server had an error while processing your request (upstream http://10.0.3.7:8443/transcribe, "
             f"org-Z9XQ4, key {KEY})")


@pytest.mark.usefixtures("prefect_harness")
def test_an_upstream_error_leaves_its_detail_in_the_logs_only(home, audio, monkeypatch):
    from blocks import registry
    from flows.process_audio import process_audio
    from vibeinsight import logs
    from vibeinsight.errors import user_message
    from vibeinsight.settings import get_settings

    with FakeOpenAI() as oa:
        oa.plan = [(500, {}, error(REVEALING, "server_error"))] * 20
        for k, v in dict(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=oa.url + "/v1", VIBEINSIGHT_OPENAI_ATTEMPTS="1",
                         VIBEINSIGHT_API_CONCURRENCY_LIMIT=f"openai-{uuid.uuid4().hex[:8]}").items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        get_settings.cache_clear()
        logs.secrets.cache_clear()  # the run's key, set above, is one of the secrets to mask
        sid = str(uuid.uuid4())
        with operator_log() as lines:
            state = process_audio(source=as_upload(audio / "jfk.flac"), session_id=sid, language="en", return_state=True)
        assert oa.requests, "the transcription API was never called"
    assert state.is_failed()

    doc = json.loads((home / "bucket" / "results" / f"{sid}.json").read_text())
    assert doc["schema_version"] == "1.3" and doc["status"] == "FAILED"
    assert doc["error"] == {"code": "api_unavailable", "message": user_message("api_unavailable", "en"),
                            "stage": "transcribe"}
    published = json.dumps(doc)
    assert "10.0.3.7" not in published and "org-Z9XQ4" not in published and KEY not in published

    row = registry.status_store().get(sid)
    assert (row.status.value, row.error_code) == ("FAILED", "api_unavailable")
    assert row.error_message == doc["error"]["message"]

    # operators: the failure's line names the stage, the code and the provider's own words, key masked
    failed = [line for line in lines if "failed at transcribe" in line["msg"]]
    assert failed and failed[-1].get("error_code") == "api_unavailable"
    assert "10.0.3.7:8443" in failed[-1]["msg"] and "org-Z9XQ4" in failed[-1]["msg"]
    assert KEY not in messages(lines) and logs.MASK in failed[-1]["msg"]
    get_settings.cache_clear()
    logs.secrets.cache_clear()
