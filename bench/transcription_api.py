"""Transcription through an API: what is sent, what it costs in accuracy, and how parallel it runs.

1. Bytes sent per audio minute (the compact Opus chunks of the transcode stage) on tests/data,
   and the error rate of Whisper on those chunks versus lossless 16 kHz FLAC of the same audio.
   OpenAI cannot be reached from here, so the bundled faster-whisper `base` model stands in for
   the API model: the figure is the cost of the compression to a Whisper model, not OpenAI's WER.
2. A 60-minute recording through a fake OpenAI endpoint (tests/fake_openai.py; the real SDK calls
   it) that answers each request after 2 s: the transcribe stage's wall time at the default
   concurrency versus one chunk at a time (sequential), in the same run.

Run: .venv/bin/python bench/transcription_api.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import AUDIO, bench_home, embedded_prefect, speech_loop  # noqa: E402

from tests.uploads import as_upload  # noqa: E402


def compression_vs_lossless(tmp: Path) -> None:
    import jiwer

    from blocks import registry
    from vibeinsight.audio import transcode as tc
    from vibeinsight.scoring import normalize_chars, normalize_text
    from vibeinsight.settings import get_settings

    refs = json.loads((AUDIO / "transcripts.json").read_text())
    cfg = get_settings().transcode
    whisper = registry.transcriber(get_settings())
    model = whisper.whisper_model()
    print("1. bytes sent per audio minute, and Whisper's error rate: compact Opus vs lossless 16 kHz FLAC")
    print(f"   {'file':14} {'lang':4} {'KB/min':>7} {'err opus':>9} {'err flac':>9} {'diff (pts)':>10}")
    total_bytes = total_s = 0.0
    diffs = []
    for name in ("jfk.flac", "ja_meeting.flac"):
        info = refs[name]
        out = tc.transcode(AUDIO / name, tmp / name, 1, None, cfg)
        track = tc.choose_tracks(out, cfg)[0]
        compact = track.path
        flac = tmp / f"{name}.16k.flac"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(AUDIO / name), "-ac", "1", "-ar", "16000",
                        str(flac)], check=True)
        scores = []
        for path in (compact, flac):
            segs, _ = model.transcribe(str(path), **whisper.transcribe_options(info["language"]))
            hyp = " ".join(s.text for s in segs)
            if info["language"] == "ja":
                err = jiwer.cer("".join(normalize_chars(info["reference"])), "".join(normalize_chars(hyp)))
            else:
                err = jiwer.wer(normalize_text(info["reference"]), normalize_text(hyp))
            scores.append(err * 100)
        size = compact.stat().st_size
        total_bytes += size
        total_s += out.duration_s
        diffs.append(scores[0] - scores[1])
        print(f"   {name:14} {info['language']:4} {size / 1024 / (out.duration_s / 60):7.1f} {scores[0]:8.1f}% "
              f"{scores[1]:8.1f}% {scores[0] - scores[1]:+10.1f}")
    print(f"   overall: {total_bytes / 1024 / (total_s / 60):.1f} KB per audio minute (target <= 250; the design's "
          f"average 500); worst error difference {max(diffs):+.1f} points (target <= +1)")


def parallel_api(tmp: Path) -> None:
    from flows.process_audio import process_audio
    from tests.fake_openai import FakeOpenAI
    from vibeinsight.settings import get_settings

    audio = speech_loop(Path(tempfile.gettempdir()) / "vibeinsight-bench-ja-60min.wav", 60)
    print("\n2. 60-minute recording, fake OpenAI endpoint answering each request after 2 s")
    figures = {}
    with FakeOpenAI() as fake:
        fake.delay_s = 2.0
        os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake.url + "/v1", VIBEINSIGHT_ANALYZER="local",
                          VIBEINSIGHT_STORAGE="local")
        default = get_settings().openai_concurrency
        for label, conc in (("default", default), ("sequential", 1)):
            os.environ["VIBEINSIGHT_OPENAI_CONCURRENCY"] = str(conc)
            get_settings.cache_clear()
            fake.requests.clear()
            fake.max_in_flight = 0
            doc = process_audio(source=as_upload(audio), session_id=str(uuid.uuid4()), language="ja")
            figures[label] = doc["timings"]["transcribe"]
            print(f"   {label:10} concurrency {conc}: {len(fake.requests)} requests "
                  f"({doc['usage']['bytes_sent']['openai'] / 1e6:.1f} MB, largest "
                  f"{max(len(r['form']['file']['data']) for r in fake.requests) / 1e6:.2f} MB), "
                  f"at most {fake.max_in_flight} in flight, transcribe stage {figures[label]:.1f} s, "
                  f"estimated cost ${doc['usage']['cost_usd']:.3f}")
    print(f"   ratio default / sequential: {figures['default'] / figures['sequential']:.3f} (target <= 0.2)")


def main() -> None:
    with embedded_prefect(bench_home()) as server, tempfile.TemporaryDirectory() as tmp:
        compression_vs_lossless(Path(tmp))  # overlaps the server's start
        server.wait_ready()
        parallel_api(Path(tmp))


if __name__ == "__main__":
    main()
