"""Probe an upload with ffprobe and decide whether it is audio we accept."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from vibeinsight.audio import ffmpeg
from vibeinsight.errors import InputRejected
from vibeinsight.settings import Limits

# Leading bytes of containers ffmpeg reads. A file that starts like one of these
# but does not probe is a damaged recording ("corrupt"), anything else that does
# not probe is "not_audio".
_MEDIA_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"RIFF"), (0, b"fLaC"), (0, b"OggS"), (0, b"ID3"), (0, b"\x1aE\xdf\xa3"),
    (4, b"ftyp"), (0, b"#!AMR"), (0, b"FORM"), (0, b"caff"), (0, b"\x30\x26\xb2\x75"),
    (0, b"\xff\xfb"), (0, b"\xff\xf3"), (0, b"\xff\xf2"), (0, b"\xff\xf1"), (0, b"\xff\xf9"),
)
# Leading text of the playlists, manifests and lists that tell ffmpeg to open other files.
_INSTRUCTION_MAGIC = (b"#EXTM3U", b"<?xml", b"<MPD", b"ffconcat", b"file ", b"#EXTINF")


class ProbeInfo(BaseModel):
    container: str  # the demuxer's name (in vibeinsight.audio.ffmpeg.DEMUXERS): what ffmpeg is told to read (-f)
    codec: str
    duration_s: float | None  # None: the container does not say (e.g. MediaRecorder WebM)
    channels: int
    sample_rate: int
    has_video: bool


def looks_like_media(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(16)
    return any(head[off:off + len(magic)] == magic for off, magic in _MEDIA_MAGIC)


def looks_like_instructions(path: Path) -> bool:
    """A playlist, manifest or concat list: text that names other files for ffmpeg to open."""
    with path.open("rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(_INSTRUCTION_MAGIC)


def ffprobe(path: Path, timeout_s: float = 30.0) -> ProbeInfo:
    """Probe path as one of the allowed containers only (vibeinsight.audio.ffmpeg); raise
    InputRejected(unsupported_format|not_audio|corrupt|media_timeout) when it holds no usable audio.

    unsupported_format: a playlist, manifest or list (instructions to open other files) or a media
    container outside the list; not_audio: pictures, text, anything else."""
    proc = ffmpeg.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                       *ffmpeg.input_args(path)], timeout_s, "ffprobe")
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["unreadable"])[-1].replace(ffmpeg.file_url(path) + ": ", "")
        refused = ffmpeg.refused_demuxer(proc.stderr)
        if looks_like_instructions(path) or (refused and ffmpeg.is_media_demuxer(refused)):
            raise InputRejected(f"the file is not an accepted audio or video format ({reason})", "unsupported_format")
        if looks_like_media(path):
            raise InputRejected(f"the recording is damaged and cannot be decoded ({reason})", "corrupt")
        raise InputRejected(f"the file is not an audio recording ({reason})", "not_audio")
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams", [])
    fmt = info.get("format", {})
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["nothing"]
        raise InputRejected(f"the file has no audio stream (found {', '.join(kinds)})", "not_audio")
    a = audio[0]
    duration = _float(a.get("duration")) or _float(fmt.get("duration"))
    if not a.get("sample_rate") or not a.get("channels"):
        raise InputRejected("the audio stream has no sample rate or channel count", "corrupt")
    has_video = any(
        s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        for s in streams
    )
    format_name = str(fmt.get("format_name", "unknown"))
    return ProbeInfo(
        container=ffmpeg.demuxer_of(format_name),
        codec=str(a.get("codec_name", "unknown")),
        duration_s=duration,
        channels=int(a["channels"]),
        sample_rate=int(a["sample_rate"]),
        has_video=has_video,
    )


def check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise InputRejected("the upload is empty (0 bytes)", "empty")
    if size > limits.max_bytes:
        raise InputRejected(f"the upload is {size} bytes; the limit is {limits.max_bytes}", "too_large")


def check_duration(duration_s: float | None, limits: Limits) -> None:
    if duration_s is None:
        return  # checked again on the decoded length after transcode
    if duration_s < limits.min_duration_s:
        raise InputRejected(
            f"the recording lasts {duration_s:.2f} s; at least {limits.min_duration_s:g} s is needed to hold speech",
            "too_short",
        )
    if duration_s > limits.max_duration_s:
        raise InputRejected(
            f"the recording lasts {duration_s:.0f} s; the limit is {limits.max_duration_s:.0f} s", "too_long"
        )


def _float(value: object) -> float | None:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if f > 0 else None
