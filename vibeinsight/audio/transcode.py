"""One streamed ffmpeg pass to compact 16 kHz mono Opus, then stream-copy cuts into chunks.

ffmpeg reads and writes in small buffers, so memory stays flat however long the
recording is; Python only reads ffmpeg's progress lines and the log afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from vibeinsight.audio import ffmpeg
from vibeinsight.audio.chunking import Span, max_chunk_seconds, plan_chunks, total_silence
from vibeinsight.errors import InputRejected, TranscodeFailed
from vibeinsight.settings import TranscodeSettings

ProgressFn = Callable[[float], None]  # fraction of the input decoded, 0..1

_SILENCE_START = re.compile(r"silence_start: (-?[\d.]+)")
_SILENCE_END = re.compile(r"silence_end: (-?[\d.]+)")
_RMS = re.compile(r"\[Parsed_astats_\d+ @ [^\]]+\] RMS level dB: (\S+)")
_OUT_TIME = re.compile(r"^out_time_us=(\d+)")


class Track(BaseModel):
    name: str  # "mix", "left", "right"
    path: Path
    bytes: int


class TranscodeOutput(BaseModel):
    tracks: list[Track]
    duration_s: float
    silences: list[Span]
    stereo_side_ratio: float | None  # side/mid RMS; ~0 for a mono mix in two channels

    @property
    def speech_s(self) -> float:
        return max(0.0, self.duration_s - total_silence(self.silences))


def build_command(src: Path, out_dir: Path, channels: int, cfg: TranscodeSettings,
                  demuxer: str | None = None, max_seconds: float | None = None) -> list[str]:
    enc = ["-c:a", "libopus", "-b:a", f"{cfg.bitrate_kbps}k", "-application", "voip", "-vbr", "on",
           "-compression_level", str(cfg.opus_compression_level)] if cfg.codec == "opus" else ["-c:a", "pcm_s16le"]
    detect = f"silencedetect=n={cfg.silence_db}dB:d={cfg.silence_min_s}"
    # Resampled in float: swr's 16-bit path loses enough precision to flip words Whisper was unsure of
    # (ja_meeting: CER 0.138 from s16, 0.103 from float, as faster-whisper's own decode_audio gives).
    head = f"[0:a:0]aformat=sample_fmts=flt,aresample={cfg.sample_rate}"
    if channels == 2:
        # Mix, each channel, and mid/side levels that tell speaker tracks from a dual-mono mix.
        graph = (
            f"{head},aformat=channel_layouts=stereo,asplit=4[a][b][c][d];"
            f"[a]pan=mono|c0=0.5*c0+0.5*c1,{detect}[mix];"
            "[b]pan=mono|c0=c0[left];[c]pan=mono|c0=c1[right];"
            "[d]pan=stereo|c0=0.5*c0+0.5*c1|c1=0.5*c0-0.5*c1,"
            "astats=measure_perchannel=RMS_level:measure_overall=none,anullsink"
        )
        outs = ["mix", "left", "right"]
    else:
        graph = f"{head},aformat=channel_layouts=mono,{detect}[mix]"
        outs = ["mix"]
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-y", *ffmpeg.input_args(src, demuxer, max_seconds),
           "-filter_complex", graph]
    for name in outs:
        cmd += ["-map", f"[{name}]", "-vn", *enc, str(out_dir / f"{name}{cfg.extension}")]
    return cmd + ["-progress", "pipe:1"]


def transcode(
    src: Path,
    out_dir: Path,
    channels: int,
    duration_hint: float | None,
    cfg: TranscodeSettings,
    on_progress: ProgressFn | None = None,
    *,
    demuxer: str | None = None,
    max_duration_s: float | None = None,
    timeout_s: float = 900.0,
    margin_s: float = 2.0,
) -> TranscodeOutput:
    """Decode src once into the compact tracks.

    `demuxer` is the container ffprobe found (passed as -f); `max_duration_s` stops the decode at
    that length plus `margin_s` whatever the header said, and rejects a longer input as too_long;
    past `timeout_s` ffmpeg is killed (vibeinsight.audio.ffmpeg)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "ffmpeg.log"
    decoded_s = 0.0
    cap = max_duration_s + margin_s if max_duration_s is not None else None
    cmd = build_command(src, out_dir, channels, cfg, demuxer, cap)
    with log_path.open("w") as log, ffmpeg.popen(cmd, timeout_s, "the transcode", stderr=log) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _OUT_TIME.match(line)
            if m:
                decoded_s = int(m.group(1)) / 1e6
                if on_progress and duration_hint:
                    on_progress(min(1.0, decoded_s / duration_hint))
        code = proc.wait()
    log_text = log_path.read_text(errors="replace")
    if max_duration_s is not None and decoded_s > max_duration_s:
        # stopped at the cap: the recording is longer than its header said (or no header said)
        raise InputRejected(f"the recording lasts more than {max_duration_s:.0f} s (decoding stopped at "
                            f"{decoded_s:.0f} s); the limit is {max_duration_s:.0f} s", "too_long")
    if code != 0:
        tail = " ".join(log_text.strip().splitlines()[-2:])[-300:]
        raise InputRejected(f"ffmpeg could not decode the audio: {tail}", "corrupt")
    names = ["mix", "left", "right"] if channels == 2 else ["mix"]
    tracks = [Track(name=n, path=out_dir / f"{n}{cfg.extension}", bytes=(out_dir / f"{n}{cfg.extension}").stat().st_size)
              for n in names]
    duration = decoded_s or duration_hint or 0.0
    if duration <= 0:
        raise InputRejected("the audio stream decoded to nothing", "corrupt")
    return TranscodeOutput(
        tracks=tracks,
        duration_s=duration,
        silences=parse_silences(log_text, duration),
        stereo_side_ratio=_side_ratio(log_text) if channels == 2 else None,
    )


def parse_silences(log_text: str, duration: float) -> list[Span]:
    spans: list[Span] = []
    start: float | None = None
    for line in log_text.splitlines():
        if (m := _SILENCE_START.search(line)):
            start = max(0.0, float(m.group(1)))
        elif (m := _SILENCE_END.search(line)) and start is not None:
            spans.append((start, min(duration, float(m.group(1)))))
            start = None
    if start is not None:  # silent to the end
        spans.append((start, duration))
    return spans


def _side_ratio(log_text: str) -> float | None:
    levels = [_db_to_linear(v) for v in _RMS.findall(log_text)]
    if len(levels) < 2 or levels[0] == 0:
        return None
    return levels[1] / levels[0]


def _db_to_linear(text: str) -> float:
    try:
        db = float(text)
    except ValueError:
        return 0.0
    return 0.0 if math.isinf(db) else 10 ** (db / 20)


def choose_tracks(out: TranscodeOutput, cfg: TranscodeSettings) -> list[Track]:
    """Speaker tracks when the channels really differ, else the mix alone."""
    if out.stereo_side_ratio is not None and out.stereo_side_ratio >= cfg.stereo_min_difference:
        return [t for t in out.tracks if t.name != "mix"]
    return [t for t in out.tracks if t.name == "mix"]


def chunk_spans(out: TranscodeOutput, cfg: TranscodeSettings, parallel: int = 1) -> list[Span]:
    """Where to cut every track; `parallel`: chunks of one track transcribed at once (balanced spans)."""
    cap = max_chunk_seconds(cfg.max_chunk_s, cfg.max_chunk_bytes, cfg.kbps)
    return plan_chunks(out.duration_s, out.silences, cap, cfg.min_chunk_s, parallel)


def split_track(track: Track, spans: list[Span], out_dir: Path, timeout_s: float = 300.0) -> list[Path]:
    """Cut a compact track at the planned times by stream copy (no re-encode)."""
    if len(spans) == 1:
        return [track.path]
    pattern = out_dir / f"{track.name}-%04d{track.path.suffix}"
    demuxer = "ogg" if track.path.suffix == ".ogg" else "wav"  # our own Opus or (local engine) PCM
    cuts = ",".join(f"{end:.3f}" for _, end in spans[:-1])
    proc = ffmpeg.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *ffmpeg.input_args(track.path, demuxer),
         "-c", "copy", "-f", "segment", "-segment_times", cuts, "-reset_timestamps", "1", str(pattern)],
        timeout_s, f"cutting {track.name} into chunks")
    if proc.returncode != 0:
        raise TranscodeFailed(f"could not cut {track.name} into chunks: {proc.stderr.strip()[-300:]}")
    paths = sorted(out_dir.glob(f"{track.name}-*{track.path.suffix}"))
    if len(paths) != len(spans):
        raise TranscodeFailed(f"expected {len(spans)} chunks of {track.name}, ffmpeg wrote {len(paths)}")
    return paths
