"""The fly-machines worker books each run's Machine time (seconds from create to exit, size, region,
price) in the usage ledger: a real Prefect API, the worker, the Machines stand-in (tests/fly_standin.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from tests.test_fly_worker import _run, fly  # noqa: F401 - the worker's fixture and run helper
from vibeinsight.quota import current_month, month_bounds

pytestmark = pytest.mark.integration


def test_the_worker_books_each_machine_run(fly, tmp_path):  # noqa: F811
    from blocks.usage_ledger import SQLiteUsageLedger

    t0 = datetime.now(timezone.utc)
    result, run, _ = asyncio.run(_run(fly, "sleep 1", cpu_kind="shared", cpus=1, memory_mb=512))
    elapsed = (datetime.now(timezone.utc) - t0).total_seconds()
    assert result.status_code == 0
    frame = SQLiteUsageLedger(path=str(tmp_path / "worker-home" / "usage.db")).events(*month_bounds(current_month())[:2])
    (row,) = frame[frame["kind"] == "machine_run"].itertuples()
    (machine,) = fly.by_run(str(run.id))
    assert (row.provider, row.session_id, row.m_size) == ("fly", str(run.id), "shared-cpu-1x/512MB")
    assert 1.0 <= row.seconds <= elapsed  # from the create to the exit: the command slept 1 s
    # shared-cpu-1x with 512 MB: 1 vCPU + 0.25 GB above the included 256 MB, at Tokyo's markup
    assert machine.region == "nrt"
    per_s = (0.0000008465 + 0.25 * 0.000002316) * 1.307692308
    assert row.cost_usd == pytest.approx(row.seconds * per_s, abs=1e-6)
