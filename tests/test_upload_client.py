"""The reference client's pure parts: which rows it shows, which content type it declares, and the
limits it shares with the Edge Function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vibeinsight.cli.upload import RowFollower, content_type
from vibeinsight.settings import SHARED_LIMITS_PATH, Limits

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_rows_arriving_twice_or_late_are_not_shown_again():
    shown = []
    f = RowFollower(shown.append)
    rows = [dict(status="PENDING", stage="queued", progress=0, seq=1),
            dict(status="RUNNING", stage="transcode", progress=12, seq=200),
            dict(status="RUNNING", stage="ingest", progress=0, seq=100),  # late Realtime delivery
            dict(status="RUNNING", stage="transcode", progress=12, seq=200),  # the same row from a poll
            dict(status="RUNNING", stage="transcribe", progress=40, seq=300),
            None,  # a poll that found nothing
            dict(status="COMPLETED", stage="done", progress=100, seq=400)]
    for row in rows:
        f.offer(row)
    assert [r["progress"] for r in shown] == [0, 12, 40, 100]
    assert f.done.is_set() and f.row["status"] == "COMPLETED"


def test_a_rerun_row_with_the_same_seq_but_a_new_status_is_shown():
    shown = []
    f = RowFollower(shown.append)
    f.offer(dict(status="FAILED", stage="ingest", progress=0, seq=50))
    f.offer(dict(status="PENDING", stage="queued", progress=0, seq=50))  # request_run keeps the seq
    assert [r["status"] for r in shown] == ["FAILED", "PENDING"]


@pytest.mark.parametrize(("name", "expected"), [("a.WAV", "audio/wav"), ("b.m4a", "audio/mp4"), ("c.opus", "audio/ogg"),
                                                ("d.mp3", "audio/mpeg"), ("e.flac", "audio/flac")])
def test_declared_content_types_are_accepted_by_the_shared_limits(name, expected):
    assert content_type(Path(name)) == expected
    assert expected in Limits().content_types


def test_python_and_the_edge_function_read_the_same_limits_file():
    config_ts = (ROOT / "infra/supabase/functions/process-audio/config.ts").read_text()
    assert 'from "../_shared/limits.json" with { type: "json" }' in config_ts
    shared = json.loads((ROOT / SHARED_LIMITS_PATH).read_text())
    limits = Limits()
    assert (limits.max_bytes, limits.content_types, limits.extensions) == (
        shared["max_bytes"], shared["content_types"], shared["extensions"])
    assert limits.max_runs_in_flight_per_user == shared["max_runs_in_flight_per_user"]
