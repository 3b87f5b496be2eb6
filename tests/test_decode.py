"""Chunk decoding (vibeinsight/audio/decode.py): faster-whisper's samples, without a full collection per file."""

from __future__ import annotations

import gc
import subprocess

import numpy as np
import pytest

from vibeinsight.audio.decode import decode_16k

pytestmark = pytest.mark.integration


def test_a_chunk_decodes_to_faster_whispers_samples_without_a_full_collection(tmp_path, audio, monkeypatch):
    import faster_whisper.audio as fw_audio

    chunk = tmp_path / "chunk-000.opus"  # a chunk as the transcode writes it: 16 kHz mono Opus
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(audio / "jfk.flac"), "-ac", "1", "-ar", "16000",
                    "-c:a", "libopus", "-b:a", "24k", str(chunk)], check=True)
    monkeypatch.setattr(fw_audio, "gc", gc)  # faster-whisper as it ships: a full collection per file
    reference = fw_audio.decode_audio(str(chunk), sampling_rate=16000)
    started: list[int] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(on_gc)
    try:
        samples = decode_16k(chunk)
    finally:
        gc.callbacks.remove(on_gc)
    assert 2 not in started, started
    assert samples.dtype == np.float32 and np.array_equal(samples, reference)
    assert len(samples) == pytest.approx(11.0 * 16000, abs=16000 * 0.05)
