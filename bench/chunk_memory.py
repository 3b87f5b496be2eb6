"""Peak RSS of the batched engine's work on one chunk, by chunk length, each in a fresh process:
the model loaded, the chunk decoded, VAD, the features of every 30 s window, one encoder batch of
8 and diarization (the parts whose memory grows with the chunk; decoding text adds beams only).

Run: .venv/bin/python bench/chunk_memory.py [SECONDS ...]   (default 120 600)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, bench_home, speech_loop  # noqa: E402

CHILD = """
import resource, sys
from pathlib import Path
import numpy as np
from faster_whisper import WhisperModel, decode_audio
from faster_whisper.audio import pad_or_trim
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps
from vibeinsight.diarization import Diarizer
from vibeinsight.models import model_dir
m = WhisperModel(str(model_dir("base", Path(sys.argv[2]))), device="cpu", compute_type="int8", cpu_threads=2)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
audio = decode_audio(sys.argv[1], sampling_rate=16000)
spans = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160))
chunks, _ = collect_chunks(audio, spans, max_duration=30)
features = np.stack([pad_or_trim(m.feature_extractor(c)[..., :-1]) for c in chunks])
m.encode(features[:8])
Diarizer(threads=2).add(audio, 0.0)
print(loaded // 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, len(chunks))
"""


def main() -> None:
    lengths = [int(a) for a in sys.argv[1:]] or [120, 600]
    tmp = Path(tempfile.gettempdir())
    cache = bench_home() / "models"
    for seconds in lengths:
        audio = speech_loop(tmp / f"vibeinsight-bench-ja-{seconds}s.wav", seconds / 60)
        out = subprocess.run([sys.executable, "-c", CHILD, str(audio), str(cache)], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.split()
        print(f"{seconds:5d} s chunk: model loaded {out[0]} MB, peak {out[1]} MB ({out[2]} windows of 30 s)")


if __name__ == "__main__":
    main()
