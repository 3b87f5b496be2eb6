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
  make it decode for hours;
- runs with nothing to steal: an environment of its own (PATH and the locale, no keys), no stdin,
  and resource limits (address space, CPU seconds, file size, open files). The parent makes itself
  non-dumpable first (`prctl(PR_SET_DUMPABLE, 0)`), which hides its `/proc/<pid>/environ` and
  memory from every process of the same user without CAP_SYS_PTRACE, so a decoder exploited by a
  hostile upload cannot read the run's keys from its parent either. (Another user or a namespace
  would need privileges a run Machine does not have; the dumpable flag needs none.)
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import resource
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vibeinsight.cores import usable_cores
from vibeinsight.errors import InputRejected

log = logging.getLogger("vibeinsight.ffmpeg")

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


# --- the child's world: its own environment, bounded resources, a parent it cannot read ---------

PR_SET_DUMPABLE = 4  # <linux/prctl.h>
_LOCALE = "C.UTF-8"  # ffmpeg's messages and number formats, the same on every Machine
_FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin"
_hidden = False


def hide_environment() -> bool:
    """Make this process non-dumpable, once: its /proc/<pid>/environ, mem and maps become unreadable to
    the children it starts (same user, no CAP_SYS_PTRACE). Also no core dumps, which would hold the keys.
    False where the system does not allow it (not Linux): logged, and the children still get a clean env."""
    global _hidden
    if _hidden:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("could not make the process non-dumpable: %s", exc)
        return False
    _hidden = True
    return True


def child_env() -> dict[str, str]:
    """Everything ffmpeg and ffprobe get from the environment: where programs are, and the locale."""
    return {"PATH": os.environ.get("PATH") or _FALLBACK_PATH, "LANG": _LOCALE, "LC_ALL": _LOCALE}


def rlimits(timeout_s: float) -> list[tuple[int, int]]:
    """(resource, limit) pairs for one child. CPU seconds: the wall timeout on every core (a backstop:
    the watchdog kills at the wall timeout first); the rest from the settings (Limits.ffmpeg_*)."""
    from vibeinsight.settings import get_settings

    limits = get_settings().limits
    cpu_s = math.ceil(timeout_s * usable_cores()) + 1
    return [(resource.RLIMIT_AS, limits.ffmpeg_max_memory_mb * 2**20), (resource.RLIMIT_CPU, cpu_s),
            (resource.RLIMIT_FSIZE, limits.ffmpeg_max_file_mb * 2**20),
            (resource.RLIMIT_NOFILE, limits.ffmpeg_max_open_files)]


def _sandbox(timeout_s: float) -> dict:
    """Popen's arguments for an untrusted child. The limits are computed here, in the parent: the
    function run between fork and exec only calls setrlimit (no imports, no allocation worth naming),
    as it runs while other threads of the flow may hold locks."""
    hide_environment()
    pairs = rlimits(timeout_s)

    def limit() -> None:
        for res, value in pairs:
            resource.setrlimit(res, (value, value))

    return dict(env=child_env(), stdin=subprocess.DEVNULL, preexec_fn=limit, close_fds=True)


def run(cmd: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run to the end within timeout_s; past it the process is SIGKILLed and MediaTimeout raised."""
    try:
        # subprocess.run kills (SIGKILL) the child when the timeout expires, then reaps it
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s,
                              **_sandbox(timeout_s))
    except subprocess.TimeoutExpired as exc:
        raise MediaTimeout(f"{what} did not finish within {timeout_s:g} s and was stopped") from exc


@contextmanager
def popen(cmd: list[str], timeout_s: float, what: str, stderr) -> Iterator[subprocess.Popen[str]]:
    """A streaming process (stdout as text lines) with a watchdog that SIGKILLs it at timeout_s.

    Raises MediaTimeout after the block when the watchdog fired; the process is always reaped."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, **_sandbox(timeout_s))
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
