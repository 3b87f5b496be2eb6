"""The one place ffmpeg and ffprobe run: uploads are read as media only, and every process is bounded.

An upload can be an instruction to ffmpeg rather than media: a DASH manifest, an HLS playlist or
a concat list (whatever its name) makes ffmpeg open other files, and a live playlist never ends.
So every invocation here
- reads its input through the `file` protocol only (`-protocol_whitelist file`, path as `file:…`,
  so a name that looks like a URL, a protocol or an option is still just a file name);
- lets ffmpeg open only the containers users upload (`-format_whitelist`), and once ffprobe has
  named the container, passes it explicitly (`-f`), so nothing is sniffed twice;
- has a timeout, at whose end the process is SIGKILLed (ffmpeg may ignore SIGTERM);
- caps the decoded length (`-t` on the input), so a header that lies about the duration cannot
  make it decode for hours.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vibeinsight.errors import InputRejected

# Demuxers of the audio and video containers users upload (ffmpeg's names). Anything else
# (hls, dash, concat, image2, lavfi, tty, data, …) never gets opened.
DEMUXERS: tuple[str, ...] = (
    "wav", "w64", "aiff", "mp3", "ogg", "flac", "mov", "matroska", "aac", "amr", "amrnb", "amrwb",
    "caf", "asf", "mpegts",
)
FORMAT_WHITELIST = ",".join(DEMUXERS)
# ffprobe's format_name lists a demuxer's aliases ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm");
# its first name is the demuxer to force with -f.
SAFE_INPUT = ["-protocol_whitelist", "file", "-format_whitelist", FORMAT_WHITELIST]
# What ffmpeg prints when a demuxer outside the list was detected: "[hls @ 0x…] Format not on whitelist …"
_REFUSED = re.compile(r"\[(\w+) @ [^\]]+\] Format not on whitelist")


class MediaTimeout(InputRejected):
    """ffmpeg or ffprobe ran past its time: the upload is not media we can read in time."""

    default_code = "media_timeout"


def demuxer_of(format_name: str) -> str:
    """The demuxer to force for what ffprobe reported, or InputRejected(unsupported_format)."""
    name = format_name.split(",")[0].strip()
    if name not in DEMUXERS:
        raise InputRejected(f"container {format_name!r} is not an accepted audio or video format",
                            "unsupported_format")
    return name


def input_args(path: Path, demuxer: str | None = None, max_seconds: float | None = None) -> list[str]:
    """`-i` and its options for one untrusted input: file protocol, allowed demuxers, the demuxer
    ffprobe found (when known) and a cap on the decoded length (when given)."""
    args = list(SAFE_INPUT)
    if demuxer is not None:
        args += ["-f", demuxer_of(demuxer)]
    if max_seconds is not None:
        args += ["-t", f"{max_seconds:.3f}"]
    return [*args, "-i", file_url(path)]


def file_url(path: Path) -> str:
    """The path as a `file:` URL, absolute: a name like `concat:a|b`, `-x` or `http:…` stays a file."""
    return "file:" + str(Path(path).resolve())


def refused_demuxer(stderr: str) -> str | None:
    """The demuxer ffmpeg detected but refused to open (not in DEMUXERS), if that is why it stopped."""
    m = _REFUSED.search(stderr)
    return m.group(1) if m else None


def is_media_demuxer(name: str) -> bool:
    """A demuxer of some media (a container, a playlist), as opposed to pictures, text or raw data."""
    return not (name.endswith("_pipe") or name in {"image2", "tty", "data", "bin", "ico", "gif", "apng", "svg"})


def run(cmd: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run to the end within timeout_s; past it the process is SIGKILLed and MediaTimeout raised."""
    try:
        # subprocess.run kills (SIGKILL) the child when the timeout expires, then reaps it
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise MediaTimeout(f"{what} did not finish within {timeout_s:g} s and was stopped") from exc


@contextmanager
def popen(cmd: list[str], timeout_s: float, what: str, stderr) -> Iterator[subprocess.Popen[str]]:
    """A streaming process (stdout as text lines) with a watchdog that SIGKILLs it at timeout_s.

    Raises MediaTimeout after the block when the watchdog fired; the process is always reaped."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield proc
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if fired.is_set():
        raise MediaTimeout(f"{what} did not finish within {timeout_s:g} s and was stopped")
