"""quota-report and the guard rails under a real Prefect API (prefect_test_harness), and a real
process-audio run feeding the ledger (embedded defaults)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from datetime import datetime, timezone

import pandas as pd
import pytest

from tests.conftest import SAMPLE, sha256
from tests.prefect_server import drain_prefect_services
from tests.quota_helpers import GB, download
from tests.uploads import as_upload
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture()
def run_home(home, prefect_harness, monkeypatch):
    monkeypatch.setenv("VIBEINSIGHT_QUOTA_PLAN", "free")
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    return home


def _ledger():
    from blocks import registry

    return registry.usage_ledger()


def test_quota_report_flow_artifacts_files_alerts_and_event(run_home):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.events.filters import EventFilter, EventNameFilter

    from flows.quota_report import ALERT_EVENT, quota_report

    # October 2026 on Free: 31 days of 200 MB = 6.2 GB, over the 5 GB line.
    _ledger().record([download("2026-10", d, 200_000_000, processing_s=30.0, confidence=0.75) for d in range(1, 32)])
    state = quota_report(plan="free", month="2026-10", return_state=True)
    assert state.is_completed()  # an alert fails nothing
    summary = state.result()
    assert summary["egress_bytes"] == 6_200_000_000 and summary["egress_pct"] == 124.0
    assert summary["files_processed"] == 31 and summary["files_remaining"] == 0
    assert summary["metrics"]["runs"] == 31 and summary["metrics"]["avg_processing_s"] == 30.0
    assert {(a["basis"], a["level"]) for a in summary["alerts"]} == {("now", "exceeded"), ("forecast", "exceeded")}

    bucket = run_home / "bucket" / "reports" / "2026-10"
    daily = pd.read_csv(bucket / "daily.csv")
    assert len(daily) == 31 and daily["egress_bytes"].sum() == 6_200_000_000
    assert daily["egress_cum_bytes"].iloc[-1] == 6_200_000_000 and (daily["egress_limit_bytes"] == 5 * GB).all()
    import matplotlib.image as mpimg

    png = (bucket / "egress.png").read_bytes()
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 100 and img.shape[1] > 100
    page = (bucket / "report.html").read_text()
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == png
    stored = json.loads((bucket / "quota-report.json").read_text())
    assert stored["egress_bytes"] == summary["egress_bytes"] and stored["report_keys"]["daily.csv"] == "reports/2026-10/daily.csv"
    assert "EXCEEDED" in (bucket / "summary.md").read_text()

    rows = _ledger().alerts("2026-10")
    assert {(r["metric"], r["basis"], r["level"]) for r in rows} == {
        ("egress_bytes", "now", "exceeded"), ("egress_bytes", "forecast", "exceeded")}
    assert rows[0]["flow_run_id"] == str(state.state_details.flow_run_id)

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        by_key = {a.key: a for a in arts}
        assert {"quota-summary", "quota-daily", "quota-cost", "quota-egress-chart", "quota-report-html",
                "monitoring-metrics"} <= set(by_key)
        assert "| Gemini success rate |" in by_key["monitoring-metrics"].data
        assert "124.0 %" in by_key["quota-summary"].data
        table = by_key["quota-daily"].data
        table = json.loads(table) if isinstance(table, str) else table
        assert len(table) == 31 and table[0]["egress_bytes"] == 200_000_000
        assert by_key["quota-egress-chart"].data.endswith("reports/2026-10/egress.png")

        def alert_events():  # the server stores events asynchronously
            page = client.read_events(EventFilter(event=EventNameFilter(name=[ALERT_EVENT])), limit=50)
            events = [e for e in page.events if e.payload.get("month") == "2026-10"]
            return events if len(events) >= 2 else None

        # the flow's events leave through Prefect's background sender: sent, then stored by the server's
        # persister in its own time (a loaded CI machine once took over 30 s: the bound is generous)
        drain_prefect_services(timeout_s=60)
        events = wait_for(alert_events, 120, 0.5, "the two quota alert events")
    assert {(e.payload["basis"], e.payload["level"]) for e in events} == {("now", "exceeded"), ("forecast", "exceeded")}
    assert events[0].resource["prefect.resource.id"] == "vibeinsight.quota.egress_bytes"


def test_real_runs_feed_the_ledger_and_the_guard_acts(run_home, tmp_path, monkeypatch):
    from blocks import registry
    from flows.process_audio import process_audio
    from vibeinsight.errors import InputRejected
    from vibeinsight.quota import current_month, month_bounds
    from vibeinsight.settings import get_settings

    upload = tmp_path / "upload.ogg"
    shutil.copy(SAMPLE, upload)
    before = sha256(upload)

    # 1. A normal run records its usage.
    doc = process_audio(source=as_upload(upload), language="en")
    start, end, _ = month_bounds(current_month())
    frame = _ledger().events(start, end)
    mine = frame[frame["session_id"] == doc["session_id"]]
    dl = mine[mine["kind"] == "storage_download"].iloc[0]
    assert dl["bytes"] == doc["source"]["bytes"] == upload.stat().st_size
    assert dl["audio_seconds"] == pytest.approx(doc["usage"]["audio_seconds"])
    assert dl["m_confidence"] == pytest.approx(doc["transcript"]["confidence"])
    assert dl["m_processing_s"] == pytest.approx(sum(v for k, v in doc["timings"].items() if k != "startup"), abs=0.01)
    # the local engine reads 16-bit PCM (issue 12): Opus and its bitrate are for an API engine only
    assert doc["transcode"]["codec"] == "pcm"
    assert doc["transcode"]["bitrate_kbps"] == get_settings().transcode.model_copy(update={"codec": "pcm"}).kbps
    writes = mine[mine["kind"] == "status_write"].iloc[0]  # the run's row updates, as Realtime egress
    assert writes["calls"] >= 2 and 100 * writes["calls"] <= writes["bytes"] <= 1024 * writes["calls"]

    # 2. This month's egress at the Free limit: new sessions are refused, nothing is lost.
    now = datetime.now(timezone.utc)
    _ledger().record([download(current_month(now), now.day, 5 * GB) | {"at": now}])
    state = process_audio(source=as_upload(upload), language="en", return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, InputRejected) and exc.code == "quota_exceeded"
    session = str(state.state_details.flow_run_id)
    row = registry.status_store().get(session)
    assert row.status.value == "FAILED" and row.error_code == "quota_exceeded"
    failed = json.loads(registry.storage().get_bytes(f"results/{session}.json"))
    assert failed["error"]["code"] == "quota_exceeded"
    assert sha256(upload) == before

    # 3. Enforcement off: the run goes through on the most compact settings.
    monkeypatch.setenv("VIBEINSIGHT_QUOTA_ENFORCE", "false")
    get_settings.cache_clear()
    doc = process_audio(source=as_upload(upload), language="en")
    assert doc["status"] == "COMPLETED"
    # compact: one mono mix (the compact Opus bitrate applies to an API engine's upload; unit-tested in
    # compact_settings), and still PCM for the local engine
    assert doc["transcode"]["tracks"] == ["mix"] and doc["transcode"]["codec"] == "pcm"
    assert sha256(upload) == before
