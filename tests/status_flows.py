"""A small flow with the pipeline's status hooks and stage reporter, served by the status tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow
from prefect.context import get_run_context

from flows.status_hooks import HOOKS, StageReporter, run_attempt


@flow(name="status-probe", **HOOKS)
def status_probe(session_id: str, user_id: str | None = None, seconds: float = 1.0, fail: bool = False,
                 pid_dir: str | None = None) -> str:
    flow_run = get_run_context().flow_run
    run_id = str(flow_run.id)
    if pid_dir:  # let the test find the engine process to kill
        Path(pid_dir, f"{session_id}.pid").write_text(str(os.getpid()))
    reporter = StageReporter(session_id, run_id, user_id, run_attempt(flow_run, session_id))  # as the pipeline's
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        reporter.report("transcribe", i / steps)
        time.sleep(seconds / steps)  # the run lasts `seconds`: what the status tests watch
    if fail:
        from vibeinsight.errors import TranscodeFailed
        raise TranscodeFailed("ffmpeg could not decode the stream", "corrupt")
    return session_id


if __name__ == "__main__":
    status_probe.serve(name="probe", limit=4)
