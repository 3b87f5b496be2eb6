"""process-audio has an overall timeout (VIBEINSIGHT_FLOW_TIMEOUT_S), shorter than the Machine's
max_runtime_s, and diarization runs as a Prefect task with its own (VIBEINSIGHT_DIARIZE_TIMEOUT_S):
past it, auto mode goes on without speakers and `on` fails the run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

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


class SlowDiarizer:
    """Stands in for the CAM++ diarizer: each chunk takes 20 s, in short steps a timeout can interrupt."""

    def __init__(self, **_kw) -> None:
        self.added = 0

    def add(self, audio, offset: float) -> None:
        for _ in range(400):
            time.sleep(0.05)
        self.added += 1

    def finish(self):
        from vibeinsight.diarization import Diarization

        return Diarization(turns=[], speakers=0, speech_s=0.0, windows=self.added)


@pytest.fixture()
def slow(tmp_path, monkeypatch, prefect_harness):
    """A run with one real 2 s chunk in its workspace, a slow diarizer and a 1 s diarization timeout."""
    import flows.process_audio as pa
    from vibeinsight.schemas import ChunkInfo, TranscodeInfo
    from vibeinsight.settings import Settings

    monkeypatch.setattr(pa, "Diarizer", SlowDiarizer)
    monkeypatch.setenv("VIBEINSIGHT_DIARIZE_TIMEOUT_S", "1")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-ar", "16000", "-ac", "1", str(tmp_path / "c0.wav"))
    compact = TranscodeInfo(codec="pcm", bitrate_kbps=256, sample_rate=16000, bytes=1, tracks=["mix"],
                            chunks=[ChunkInfo(index=0, track="mix", start=0.0, end=2.0, bytes=1, key="c0.wav")])

    def run(mode: str):
        monkeypatch.setenv("VIBEINSIGHT_DIARIZE", mode)
        return SimpleNamespace(settings=Settings(), workspace=tmp_path, warnings=[], timings={})

    return pa, compact, run


@pytest.mark.integration
def test_diarization_past_its_timeout_goes_on_without_speakers_in_auto_mode(slow):
    pa, compact, make_run = slow
    run = make_run("auto")
    assert pa.diarize_in_time(compact, run, pa.SpeakerRequest()) is None
    assert run.warnings == ["diarization_failed"] and "diarize" in run.timings


@pytest.mark.integration
def test_diarization_past_its_timeout_fails_the_run_when_required(slow):
    from vibeinsight.errors import TranscriptionFailed

    pa, compact, make_run = slow
    with pytest.raises(TranscriptionFailed) as failed:
        pa.diarize_in_time(compact, make_run("on"), pa.SpeakerRequest())
    assert failed.value.code == "diarization_failed" and "timed out" in str(failed.value)
