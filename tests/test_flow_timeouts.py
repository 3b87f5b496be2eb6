"""process-audio has an overall timeout (VIBEINSIGHT_FLOW_TIMEOUT_S), shorter than the Machine's
max_runtime_s, and diarization runs as a Prefect task with its own (VIBEINSIGHT_DIARIZE_TIMEOUT_S):
past it, auto mode goes on without speakers and `on` fails the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ffmpeg

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_the_flow_timeout_is_the_setting_read_where_the_run_imports_the_flow(tmp_path):
    code = "from flows.process_audio import process_audio; print(process_audio.timeout_seconds)"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VIBEINSIGHT_HOME": str(tmp_path),
           "PREFECT_HOME": str(tmp_path / "prefect"), "VIBEINSIGHT_FLOW_TIMEOUT_S": "7"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) == 7.0


@pytest.mark.unit
def test_the_default_flow_timeout_ends_a_run_before_its_machine_is_killed():
    from deployments.fly_worker.config import DEFAULT_MAX_RUNTIME_S
    from vibeinsight.settings import FlowSettings

    assert FlowSettings.model_fields["timeout_s"].default < DEFAULT_MAX_RUNTIME_S


# Run as a flow run's process runs it (its own interpreter, the flow in its main thread), so no signal
# handler or thread state of this test process is in the way: a diarizer whose chunk takes 20 s, in
# steps a timeout can interrupt, inside a flow that calls the flow's own diarize_in_time.
SCRIPT = """
import json, sys, time
from types import SimpleNamespace
from prefect import flow
import flows.process_audio as pa
from vibeinsight.diarization import Diarization
from vibeinsight.errors import PipelineError
from vibeinsight.schemas import ChunkInfo, TranscodeInfo
from vibeinsight.settings import Settings

class SlowDiarizer:
    def __init__(self, **kw):
        self.added = 0
    def add_file(self, path, offset):  # what diarize() calls for each chunk file
        for _ in range(400):
            time.sleep(0.05)
        self.added += 1
    def finish(self):
        return Diarization(turns=[], speakers=0, speech_s=0.0, windows=self.added)

pa.Diarizer = SlowDiarizer

@flow(name="diarize-timeout-probe", timeout_seconds=600)  # as process-audio: the flow holds a timeout too
def probe(workspace: str) -> dict:
    compact = TranscodeInfo(codec="pcm", bitrate_kbps=256, sample_rate=16000, bytes=1, tracks=["mix"],
                            chunks=[ChunkInfo(index=0, track="mix", start=0.0, end=2.0, bytes=1, key="c0.wav")])
    run = SimpleNamespace(settings=Settings(), workspace=__import__("pathlib").Path(workspace), warnings=[], timings={})
    try:
        found = pa.diarize_in_time(compact, run, pa.SpeakerRequest())
    except PipelineError as exc:
        return {"raised": exc.code, "message": str(exc)}
    return {"found": found is not None, "warnings": run.warnings, "timed": "diarize" in run.timings}

print("RESULT " + json.dumps(probe(sys.argv[1])))
"""


def diarize_slowly(tmp_path: Path, mode: str) -> dict:
    from prefect.settings import PREFECT_API_URL

    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-ar", "16000", "-ac", "1", str(tmp_path / "c0.wav"))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "VIBEINSIGHT_HOME": str(tmp_path), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "VIBEINSIGHT_DIARIZE": mode,
           "VIBEINSIGHT_DIARIZE_TIMEOUT_S": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.integration
def test_diarization_past_its_timeout_goes_on_without_speakers_in_auto_mode(tmp_path, prefect_harness):
    assert diarize_slowly(tmp_path, "auto") == {"found": False, "warnings": ["diarization_failed"], "timed": True}


@pytest.mark.integration
def test_diarization_past_its_timeout_fails_the_run_when_required(tmp_path, prefect_harness):
    result = diarize_slowly(tmp_path, "on")
    assert result["raised"] == "diarization_failed" and "timed out" in result["message"]
