"""Uploads crafted as an attacker would, on the real ffmpeg: instructions to open other files
(DASH manifests, HLS playlists with and without an end, concat lists, whatever their names), a
stream whose first frames lie about its length, names that look like protocols or options, and
parameters that point outside the workspace. Each is rejected with a code, and the file the
instructions point at (a real recording, jfk.flac) never reaches any output.

Time is bounded by the subprocess timeouts, not asserted: a hang would end as media_timeout,
so getting the expected code proves ffmpeg returned by itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import media
from tests.conftest import ffmpeg, sha256
from tests.operator_log import messages, operator_log
from tests.uploads import as_upload
from vibeinsight.audio import ffmpeg as safe
from vibeinsight.audio import transcode as tc
from vibeinsight.audio.probe import ffprobe
from vibeinsight.errors import InputRejected
from vibeinsight.settings import TranscodeSettings

SECRET_WORDS = ("country", "fellow", "americans")  # jfk.flac says them; nothing here may


@pytest.fixture()
def secret(tmp_path, audio) -> Path:
    """A folder on the worker's disk holding a recording the upload must never get at, in the
    forms the manifests name (MPEG-TS, MP4, ADTS AAC)."""
    d = tmp_path / "private"
    d.mkdir()
    src = audio / "jfk.flac"
    ffmpeg("-i", str(src), "-c:a", "aac", "-f", "mpegts", str(d / "secret.ts"))
    ffmpeg("-i", str(src), "-c:a", "aac", str(d / "secret.m4a"))
    ffmpeg("-i", str(src), "-c:a", "aac", str(d / "secret.aac"))
    return d


def dash(target: Path) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT11S" minBufferTime="PT1S"
     profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
  <Period><AdaptationSet mimeType="audio/mp4">
    <Representation id="a" bandwidth="64000" codecs="mp4a.40.2" audioSamplingRate="16000">
      <BaseURL>file://{target}</BaseURL>
    </Representation>
  </AdaptationSet></Period>
</MPD>
"""


def hls(target: Path, end: bool) -> str:
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:12\n#EXTINF:11.0,\n"
            f"{target}\n" + ("#EXT-X-ENDLIST\n" if end else ""))


def craft(kind: str, secret: Path, name: str) -> Path:
    """The hostile upload of `kind`, written beside the secret (so relative names resolve too)."""
    path = secret / name
    if kind == "dash":
        path.write_text(dash(secret / "secret.m4a"))
    elif kind == "hls":
        path.write_text(hls(secret / "secret.ts", end=True))
    elif kind == "hls-live":
        path.write_text(hls(secret / "secret.ts", end=False))
    elif kind == "concat":
        path.write_text("ffconcat version 1.0\nfile secret.aac\n")  # the concat demuxer's "safe" names
    return path


ATTACKS = [("dash", "upload.wav"), ("dash", "call.mpd"), ("hls", "meeting.wav"), ("hls", "x.m3u8"),
           ("hls-live", "live.wav"), ("concat", "list.mp3"), ("concat", "a.b.ffconcat")]


def unguarded_format(path: Path) -> str:
    """What a plain ffprobe (no allowlists) makes of the file: proof that it is an attack."""
    proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=path.parent)
    return json.loads(proc.stdout or "{}").get("format", {}).get("format_name", "")


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        low = text.lower()
        assert not any(w in low for w in SECRET_WORDS), text[:300]


def _code(fn, *args, **kwargs) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.integration
@pytest.mark.parametrize(("kind", "name"), ATTACKS)
def test_instructions_to_ffmpeg_are_rejected_before_decoding(secret, tmp_path, kind, name):
    upload = craft(kind, secret, name)
    before = sha256(upload)
    assert unguarded_format(upload) in ("dash", "hls", "concat")  # plain ffmpeg would follow it
    err = _code(ffprobe, upload, timeout_s=20)
    assert err.code == "unsupported_format"
    # Even if the probe were fooled, the transcode refuses it (the allowlist is on every input),
    # with or without the container named, and writes nothing.
    out = tmp_path / f"out-{kind}"
    for demuxer in (None, "wav"):
        with pytest.raises(InputRejected) as info:
            tc.transcode(upload, out, 1, None, TranscodeSettings(), demuxer=demuxer, timeout_s=20)
        assert info.value.code in ("corrupt", "unsupported_format")
        assert_no_secret(str(info.value))
    assert not list(out.glob("*.ogg")) or all(p.stat().st_size < 200 for p in out.glob("*.ogg"))
    assert_no_secret(str(err), (out / "ffmpeg.log").read_text(errors="replace"))
    assert sha256(upload) == before


@pytest.mark.integration
def test_an_allowed_container_never_opens_other_files(secret, tmp_path):
    """The allowlist does not stop at the top level: a Matroska or MP4 cannot pull a file in either
    (the file protocol only, and MP4's external references stay off)."""
    mkv = media.tone(tmp_path / "tone.mkv", 2)
    info = ffprobe(mkv)
    assert info.container == "matroska" and info.duration_s == pytest.approx(2.0, abs=0.1)
    out = tc.transcode(mkv, tmp_path / "o", 1, info.duration_s, TranscodeSettings(), demuxer=info.container,
                       max_duration_s=60, timeout_s=60)
    assert out.duration_s == pytest.approx(2.0, abs=0.1)


def liar_mp3(path: Path, real_s: float = 60.0) -> Path:
    """One second at 320 kb/s, then real_s at 32 kb/s, no Xing header: ffprobe estimates the length
    from the first frames' bitrate and reports a small fraction of it."""
    hi, lo = path.with_suffix(".hi.mp3"), path.with_suffix(".lo.mp3")
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-ar", "44100", "-b:a", "320k", "-write_xing", "0",
           "-id3v2_version", "0", str(hi))
    ffmpeg("-f", "lavfi", "-i", f"sine=f=500:d={real_s}", "-ar", "44100", "-b:a", "32k", "-write_xing", "0",
           "-id3v2_version", "0", str(lo))
    path.write_bytes(hi.read_bytes() + lo.read_bytes())
    hi.unlink()
    lo.unlink()
    return path


@pytest.mark.integration
def test_a_lying_header_is_caught_while_decoding(tmp_path):
    src = liar_mp3(tmp_path / "liar.mp3", real_s=60)
    info = ffprobe(src)
    assert info.duration_s < 15  # the header's story: far under the 20 s limit below
    err = _code(tc.transcode, src, tmp_path / "o", 1, info.duration_s, TranscodeSettings(), demuxer=info.container,
                max_duration_s=20, margin_s=2, timeout_s=60)
    assert err.code == "too_long"
    # decoding stopped at the limit plus the margin, not at the real 61 s
    made = ffprobe(tmp_path / "o" / "mix.ogg")
    assert made.duration_s <= 23


@pytest.mark.integration
@pytest.mark.parametrize("name", ["concat:secret.aac|x.wav", "-i.wav", "..wav", "a.m3u8.wav", "http:example.wav"])
def test_names_that_look_like_protocols_or_options_are_just_files(secret, tmp_path, name):
    """The file is a 3-second tone; read by name through the `file:` URL, never as a protocol, an
    option or the file a prefix names (the secret beside it lasts 11 s)."""
    path = secret / name
    media.tone(tmp_path / "t.wav", 3)
    shutil.copy(tmp_path / "t.wav", path)
    info = ffprobe(path)
    assert info.container == "wav" and info.duration_s == pytest.approx(3.0, abs=0.05)
    out = tc.transcode(path, tmp_path / "o", 1, info.duration_s, TranscodeSettings(), demuxer="wav",
                       max_duration_s=60, timeout_s=60)
    assert out.duration_s == pytest.approx(3.0, abs=0.1)


IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"


@pytest.mark.integration
def test_a_process_past_its_timeout_is_killed(tmp_path):
    """A process that ignores SIGTERM (as ffmpeg on a live playlist does) is SIGKILLed at its timeout."""
    with pytest.raises(safe.MediaTimeout) as info:
        safe.run([sys.executable, "-c", IGNORES_SIGTERM], 1.0, "a stubborn process")
    assert info.value.code == "media_timeout"
    pids: list[int] = []
    with pytest.raises(safe.MediaTimeout):
        with safe.popen([sys.executable, "-c", IGNORES_SIGTERM], 1.0, "a stubborn stream",
                        stderr=subprocess.DEVNULL) as proc:
            pids.append(proc.pid)
            for _line in proc.stdout:  # blocks until the watchdog kills it
                pass
    assert proc.returncode == -9  # SIGKILL, reaped


# --- the whole flow -------------------------------------------------------------------------------

def run_flow(source, **params):
    from flows.process_audio import process_audio

    return process_audio(source=as_upload(source), return_state=True, **params)


def row(session_id):
    from blocks import registry

    return registry.status_store().get(session_id)


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_flow_rejects_a_manifest_and_leaks_nothing(home, secret):
    upload = craft("dash", secret, "upload.wav")
    before = sha256(upload)
    sid = str(uuid.uuid4())
    with operator_log() as lines:
        state = run_flow(upload, session_id=sid, language="ja")
    assert state.is_failed()
    r = row(sid)
    assert (r.status.value, r.error_code) == ("FAILED", "unsupported_format")
    doc = json.loads((home / "bucket" / "results" / f"{sid}.json").read_text())
    assert doc["error"]["code"] == "unsupported_format" and doc["transcript"] is None
    # users read the fixed sentence (the run asked for Japanese); operators get the detail, in the log
    assert r.error_message == doc["error"]["message"] and "対応していません" in r.error_message
    assert "detail" not in doc["error"]
    assert "whitelist" in messages(lines) or "not an accepted" in messages(lines)
    assert_no_secret(json.dumps(doc, ensure_ascii=False), r.model_dump_json())
    assert sha256(upload) == before and not (home / "work" / str(state.state_details.flow_run_id)).exists()


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_flow_stops_a_lying_header_at_the_limit(home, tmp_path, monkeypatch):
    from vibeinsight.settings import get_settings

    monkeypatch.setenv("VIBEINSIGHT_MAX_DURATION_S", "20")
    get_settings.cache_clear()
    src = liar_mp3(tmp_path / "liar.mp3", real_s=60)
    sid = str(uuid.uuid4())
    state = run_flow(src, session_id=sid)
    assert state.is_failed()
    assert row(sid).error_code == "too_long"
    doc = json.loads((home / "bucket" / "results" / f"{sid}.json").read_text())
    assert doc["error"]["stage"] == "transcode"


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("bad", ["../outside", "ABSOLUTE", "../../victim", "not-a-uuid"])
def test_flow_parameters_cannot_reach_outside_the_workspace(home, tmp_path, bad):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    outside = home / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    session_id = str(victim) if bad == "ABSOLUTE" else bad
    src = media.tone(tmp_path / "t.wav", 2)
    state = run_flow(src, session_id=session_id)
    assert state.is_failed()
    flow_run_id = str(state.state_details.flow_run_id)
    r = row(flow_run_id)  # a session_id that is not a UUID keys nothing: the run's own id does
    assert (r.status.value, r.error_code) == ("FAILED", "invalid_parameter")
    assert (victim / "keep.txt").read_text() == "keep" and (outside / "keep.txt").read_text() == "keep"
    assert row(session_id) is None


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_flow_lower_cases_ids_and_rejects_a_bad_user_id(home, tmp_path):
    src = media.tone(tmp_path / "t.wav", 2)
    sid = str(uuid.uuid4())
    state = run_flow(src, session_id=sid, user_id="bob")
    assert state.is_failed() and row(sid).error_code == "invalid_parameter"
    upper = str(uuid.uuid4()).upper()
    state = run_flow(tmp_path / "missing.wav", session_id=upper)
    assert row(upper.lower()).error_code == "not_found"
