import subprocess

import pytest

from tests import media
from vibeinsight.audio import transcode as tc
from vibeinsight.audio.probe import ffprobe
from vibeinsight.settings import TranscodeSettings

pytestmark = pytest.mark.integration


def test_stereo_speaker_tracks_are_kept_apart(tmp_path, audio):
    cfg = TranscodeSettings()
    out = tc.transcode(audio / "stereo_diarization.wav", tmp_path, 2, 5.0, cfg)
    assert out.stereo_side_ratio > cfg.stereo_min_difference
    assert [t.name for t in tc.choose_tracks(out, cfg)] == ["left", "right"]
    for t in out.tracks:
        p = ffprobe(t.path)
        assert (p.codec, p.channels) == ("opus", 1)
        # ffprobe reports Opus's decode rate (always 48 kHz); the rate the encoder was fed, the one the
        # transcode chose, is in the Ogg Opus header
        assert opus_head(t.path) == (1, cfg.sample_rate)


def opus_head(path) -> tuple[int, int]:
    """(channels, input sample rate) from the OpusHead packet (RFC 7845 §5.1)."""
    data = path.read_bytes()
    i = data.index(b"OpusHead")
    return data[i + 9], int.from_bytes(data[i + 12:i + 16], "little")


def test_dual_mono_stereo_is_one_mix(tmp_path, audio):
    dual = tmp_path / "dual.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(audio / "jfk.flac"), "-af", "pan=stereo|c0=c0|c1=c0", str(dual)],
                   check=True)
    cfg = TranscodeSettings()
    out = tc.transcode(dual, tmp_path / "o", 2, 11.0, cfg)
    assert out.stereo_side_ratio < 0.01
    assert [t.name for t in tc.choose_tracks(out, cfg)] == ["mix"]


def test_compact_output_is_small_and_progress_reported(tmp_path, audio):
    seen = []
    out = tc.transcode(audio / "jfk.flac", tmp_path, 1, 11.0, TranscodeSettings(), on_progress=seen.append)
    mix = out.tracks[0]
    per_minute = mix.bytes / (out.duration_s / 60)
    assert per_minute < 250_000  # the design averages 500 KB a minute
    assert seen and seen[-1] == pytest.approx(1.0, abs=0.05)
    assert out.duration_s == pytest.approx(11.0, abs=0.1)


def test_long_recording_is_cut_at_silences(tmp_path, audio):
    src = media.with_gaps(tmp_path / "gaps.wav", audio / "jfk.flac", repeats=4, gap_s=2.0)
    cfg = TranscodeSettings(max_chunk_s=30, min_chunk_s=5)
    out = tc.transcode(src, tmp_path / "o", 1, None, cfg)
    spans = tc.chunk_spans(out, cfg)
    assert len(spans) >= 2 and all(e - s <= 30 for s, e in spans)
    for _, end in spans[:-1]:
        assert any(s <= end <= e for s, e in out.silences), f"cut at {end} is not in a silence"
    paths = tc.split_track(out.tracks[0], spans, tmp_path / "o")
    durations = [ffprobe(p).duration_s for p in paths]
    assert sum(durations) == pytest.approx(out.duration_s, abs=0.3)
    for (s, e), d in zip(spans, durations, strict=True):
        assert d == pytest.approx(e - s, abs=0.15)


def test_telephone_audio_is_resampled(tmp_path, audio):
    tel = media.telephone(tmp_path / "tel.wav", audio / "jfk.flac")
    assert ffprobe(tel).sample_rate == 8000
    out = tc.transcode(tel, tmp_path / "o", 1, 11.0, TranscodeSettings())
    assert out.duration_s == pytest.approx(11.0, abs=0.1)


def test_pure_silence_is_all_silence(tmp_path):
    out = tc.transcode(media.silence(tmp_path / "s.wav", 8), tmp_path / "o", 1, 8.0, TranscodeSettings())
    assert out.speech_s == pytest.approx(0.0, abs=0.05)
