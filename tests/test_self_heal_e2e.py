"""Issue 20, point 6: a fault that passes never needs a person. 12 sessions on the real stack
(tests/fault_stack.py: a Prefect server, process workers, the status observer, a private PostgreSQL
for the status rows and SeaweedFS as S3) while a worker is SIGKILLed with the run it had in flight,
the S3 server is stopped for 10 s and the status PostgreSQL restarts. Nobody presses Retry: the
storage and database calls ride out their outages, and reconcile-status runs the crashed run again
(the same flow run, so its session and row), so every session ends COMPLETED."""

from __future__ import annotations

import pytest

from tests.fault_stack import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


def test_twelve_sessions_complete_through_faults_with_no_manual_retry(tmp_path):
    out = run_scenario(tmp_path, n=12, faults=True, deadline_s=1100, manual_reruns=False)
    events = " | ".join(e for _, e in out.events)
    assert "SIGKILL worker-1" in events and "S3 server back" in events and "status PostgreSQL back" in events, events
    assert out.killed_run is not None
    assert not out.reruns  # nobody re-ran anything by hand
    assert set(out.final_rows) == set(out.sessions)
    not_done = {s: r for s, r in out.final_rows.items() if r["status"] != "COMPLETED"}
    assert not not_done, (not_done, events, out.reconciled, out.logs)
    assert "deadline reached" not in events, events
    # the killed run was run again by reconcile-status, the same flow run, which is the row's run still
    assert any(r["to"] == "RERUN" and r["flow_run_id"] == out.killed_run for r in out.reconciled), out.reconciled
    assert out.uploads_after == out.uploads  # not one upload changed (ETag and bytes)
    print(f"{len(out.sessions)} sessions in {out.wall_s:.0f} s ({out.per_min:.1f}/min), all COMPLETED with no manual "
          f"retry; reconciled {out.reconciled}")
