"""The quota guard's per-user share: one user past their share of the plan's monthly egress is
refused (quota_exceeded) while the project-wide limit still has room and other users still run."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import datetime, timezone

import pytest

from tests.conftest import SAMPLE, sha256
from tests.quota_helpers import GB, download
from tests.uploads import as_upload
from vibeinsight.quota import QuotaLimits, current_month, user_share_exceeded


def limits(gb: float = 5) -> QuotaLimits:
    return QuotaLimits(plan="free", egress_limit_bytes=int(gb * GB), realtime_connections=200, realtime_messages_per_s=100)


@pytest.mark.unit
def test_a_user_is_refused_at_their_share_only():
    assert user_share_exceeded(int(1.2 * GB), limits(), 25) is None
    why = user_share_exceeded(int(1.25 * GB), limits(), 25)
    assert why and "25 %" in why and "1.25 GB" in why


@pytest.mark.unit
def test_usage_rows_name_the_runs_user():
    from vibeinsight.usage import events_from_document

    user = str(uuid.uuid4())
    doc = {"session_id": str(uuid.uuid4()), "user_id": user, "status": "COMPLETED",
           "usage": {"bytes_in": 1000, "bytes_out": 200}}
    events = events_from_document(doc)
    assert events and all(e.meta["user_id"] == user for e in events)
    assert all("user_id" not in e.meta for e in events_from_document({**doc, "user_id": None}))


@pytest.fixture()
def run_home(home, prefect_harness, monkeypatch):
    monkeypatch.setenv("VIBEINSIGHT_QUOTA_PLAN", "free")
    from vibeinsight.settings import get_settings

    get_settings.cache_clear()
    return home


@pytest.mark.integration
def test_the_guard_refuses_the_user_over_their_share_and_runs_the_others(run_home, tmp_path):
    from blocks import registry
    from flows.process_audio import process_audio
    from vibeinsight.errors import InputRejected

    heavy, light = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    # 1.3 GB for one user: past the 25 % share of Free's 5 GB, far from the project's limit
    registry.usage_ledger().record([download(current_month(now), now.day, int(1.3 * GB), user_id=heavy) | {"at": now},
                                    download(current_month(now), now.day, int(0.5 * GB), user_id=light) | {"at": now}])
    upload = tmp_path / "upload.ogg"
    shutil.copy(SAMPLE, upload)
    before = sha256(upload)

    state = process_audio(source=as_upload(upload), user_id=heavy, language="en", return_state=True)
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, InputRejected) and exc.code == "quota_exceeded" and "share" in exc.message
    session = str(state.state_details.flow_run_id)
    assert registry.status_store().get(session).error_code == "quota_exceeded"
    assert json.loads(registry.storage().get_bytes(f"results/{session}.json"))["error"]["code"] == "quota_exceeded"
    assert sha256(upload) == before

    doc = process_audio(source=as_upload(upload), user_id=light, language="en")
    assert doc["status"] == "COMPLETED"
