"""The transcription engine in one run, on one 5-minute Japanese recording and one loaded model:

- faster-whisper's BatchedInferencePipeline called directly with the flow's own options (one model
  on every core, as a user calls it),
- sequential faster-whisper (WhisperModel.transcribe, same beam, VAD and word timestamps),
- the process-audio flow (diarization off, so both sides do the same work), its transcribe stage,
- diarization alone: seconds (wall and CPU) per audio minute.

Prints times, CER against the reference text and the ratios (targets: flow ≤ 1.10× direct batched,
transcribe stage ≤ 1.0× at equal or lower CER).
Run: .venv/bin/python bench/transcribe_engine.py [--language ja|auto] [--minutes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUDIO, bench_home, embedded_prefect, speech_loop  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.uploads import as_upload  # noqa: E402
from vibeinsight.cores import usable_cores  # noqa: E402


def cer_of(text: str, duration_s: float) -> float:
    import jiwer

    from vibeinsight.scoring import normalize_chars

    ref = json.loads((AUDIO / "transcripts.json").read_text())["ja_meeting.flac"]["reference"]
    # speech_loop repeats the 10.6 s clip with 1.5 s of silence; the last repeat may be cut short
    repeats = duration_s / (10.6 + 1.5)
    reference = ref * int(repeats) + ref[: int(len(ref) * (repeats % 1))]
    return jiwer.cer("".join(normalize_chars(reference)), "".join(normalize_chars(text)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--language", default="ja")
    ap.add_argument("--minutes", type=float, default=5.0)
    args = ap.parse_args()
    os.environ["VIBEINSIGHT_DIARIZE"] = "off"
    with embedded_prefect(bench_home()) as server:
        server.wait_ready()
        audio = speech_loop(Path(tempfile.gettempdir()) / f"vibeinsight-bench-ja-{args.minutes:g}min.wav", args.minutes)
        from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

        from blocks import registry
        from flows.process_audio import process_audio
        from vibeinsight.diarization import Diarizer
        from vibeinsight.models import model_dir
        from vibeinsight.settings import get_settings, machine_batch_size

        transcriber = registry.transcriber(get_settings())
        transcriber.warm_up()  # the flow's own model: one single-threaded replica per chunk in flight
        # faster-whisper as a user calls it: one model on every core (the same files, int8)
        model = WhisperModel(str(model_dir(transcriber.model, Path(transcriber.model_cache))), device="cpu",
                             compute_type="int8", cpu_threads=usable_cores())
        lang = transcriber.check_language(args.language)
        options = transcriber.transcribe_options(lang)
        # the direct call gets every window the machine holds in one batch (the flow splits them among its chunks)
        direct_options = {**options, "batch_size": machine_batch_size()}

        def direct_batched() -> tuple[float, str]:
            t0 = time.perf_counter()
            segments, _ = BatchedInferencePipeline(model).transcribe(str(audio), **direct_options)
            text = "".join(s.text for s in segments)
            return time.perf_counter() - t0, text

        def sequential() -> tuple[float, str]:
            seq = {k: v for k, v in options.items() if k not in ("batch_size", "multilingual")}
            t0 = time.perf_counter()
            segments, _ = model.transcribe(str(audio), **seq)
            text = "".join(s.text for s in segments)
            return time.perf_counter() - t0, text

        def flow() -> tuple[float, dict]:
            t0 = time.perf_counter()
            doc = process_audio(source=as_upload(audio), language=args.language)
            return time.perf_counter() - t0, doc

        flow()  # warm Prefect's client and the OS file cache
        (b1, bt), (f1, doc), (b2, _), (f2, doc2), (s1, st) = direct_batched(), flow(), direct_batched(), flow(), sequential()
        duration = doc["source"]["duration_s"]
        b, f = (b1 + b2) / 2, (f1 + f2) / 2
        stage = (doc["timings"]["transcribe"] + doc2["timings"]["transcribe"]) / 2
        cer_b, cer_f, cer_s = cer_of(bt, duration), cer_of(doc["transcript"]["text"], duration), cer_of(st, duration)

        samples = decode_audio(str(audio), sampling_rate=16000)
        d = Diarizer(threads=usable_cores())
        d.add(samples[:16000], 0.0)  # load the model outside the measurement
        d = Diarizer(threads=usable_cores())
        c0, w0 = time.process_time(), time.perf_counter()
        step = int(transcriber.max_chunk_s * 16000)
        for i in range(0, len(samples), step):
            d.add(samples[i:i + step], i / 16000)
        found = d.finish()
        dcpu, dwall = time.process_time() - c0, time.perf_counter() - w0

        minutes = duration / 60
        print(f"{duration:.0f} s Japanese recording, model {transcriber.model} int8, beam {transcriber.beam_size}, "
              f"{usable_cores()} cores; direct: batch {direct_options['batch_size']}, {usable_cores()} threads; "
              f"flow: {transcriber.parallel_chunks()} chunk(s) at once, each batch {options['batch_size']} "
              f"x {transcriber.threads()} thread(s), "
              f"language {args.language}")
        print(f"faster-whisper BatchedInferencePipeline direct: {b:.1f} s (runs {b1:.1f}, {b2:.1f}), CER {cer_b:.3f}")
        print(f"faster-whisper sequential:                      {s1:.1f} s, CER {cer_s:.3f}")
        print(f"process-audio flow:                             {f:.1f} s (runs {f1:.1f}, {f2:.1f}), CER {cer_f:.3f}")
        print(f"  its transcribe stage:                         {stage:.1f} s (stage timings {doc['timings']})")
        print(f"ratio flow / direct batched:       {f / b:.3f} (target <= 1.10)")
        print(f"ratio transcribe stage / batched:  {stage / b:.3f} (target <= 1.0 at equal or lower CER: "
              f"{cer_f:.3f} vs {cer_b:.3f})")
        print(f"ratio direct batched / sequential: {b / s1:.3f}; flow / sequential: {f / s1:.3f}")
        print(f"diarization: {dwall / minutes:.2f} s wall, {dcpu / minutes:.2f} CPU-s per audio minute "
              f"({found.speakers} speaker(s) found, {found.windows} windows)")


if __name__ == "__main__":
    main()
