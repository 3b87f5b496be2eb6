"""Warm pipeline overhead: the flow on a 5-minute recording against an already running Prefect API,
versus faster-whisper's BatchedInferencePipeline called directly on the same file with the same
model and options (bench/transcribe_engine.py adds sequential faster-whisper, CER and diarization).

Also prints the bytes sent to transcription per audio minute and whisper time per audio second.
Run: .venv/bin/python bench/pipeline_overhead.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, embedded_prefect, speech_loop  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.uploads import as_upload  # noqa: E402
from vibeinsight.cores import usable_cores  # noqa: E402


def main() -> None:
    with embedded_prefect(bench_home()) as server:
        server.wait_ready()
        audio = speech_loop(Path(tempfile.gettempdir()) / "vibeinsight-bench-ja-5min.wav", 5)
        from faster_whisper import BatchedInferencePipeline

        from blocks import registry
        from flows.process_audio import process_audio
        from vibeinsight.settings import get_settings

        transcriber = registry.transcriber(get_settings())
        model = transcriber.whisper_model()  # both sides use this one loaded model
        options = transcriber.transcribe_options(None)

        def direct() -> float:
            t0 = time.perf_counter()
            segments, _ = BatchedInferencePipeline(model).transcribe(str(audio), **options)
            for _ in segments:
                pass
            return time.perf_counter() - t0

        def pipeline() -> tuple[float, dict]:
            t0 = time.perf_counter()
            doc = process_audio(source=as_upload(audio))
            return time.perf_counter() - t0, doc

        process_audio(source=as_upload(audio))  # warm Prefect's client and the OS file cache
        d1, (p1, doc), d2, (p2, _) = direct(), pipeline(), direct(), pipeline()
        d, p = (d1 + d2) / 2, (p1 + p2) / 2
        minutes = doc["source"]["duration_s"] / 60
        print(f"5-minute recording ({doc['source']['duration_s']:.0f} s), model {transcriber.model}, "
              f"{usable_cores()} cores, {transcriber.parallel_chunks()} chunk(s) at once")
        print(f"faster-whisper direct: {d:.1f} s (runs {d1:.1f}, {d2:.1f})")
        print(f"process-audio flow:    {p:.1f} s (runs {p1:.1f}, {p2:.1f})")
        print(f"overhead ratio flow / direct: {p / d:.3f} (target <= 1.10)")
        print(f"bytes sent to transcription: {doc['transcode']['bytes'] / minutes / 1000:.1f} KB per audio minute "
              f"(source {doc['source']['bytes'] / minutes / 1000:.0f} KB/min)")
        print(f"whisper time per audio second: {doc['timings']['transcribe'] / doc['source']['duration_s']:.3f} s "
              f"(stage timings {doc['timings']})")


if __name__ == "__main__":
    main()
