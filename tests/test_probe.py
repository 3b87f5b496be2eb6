"""Each rejection code, triggered by a real file (ffprobe); the size check alone is plain logic."""

import pytest

from tests import media
from tests.conftest import ffmpeg
from vibeinsight.audio.probe import check_duration, check_size, ffprobe
from vibeinsight.errors import InputRejected
from vibeinsight.settings import Limits


def _code(fn, *args):
    with pytest.raises(InputRejected) as info:
        fn(*args)
    return info.value.code


@pytest.mark.unit
def test_empty_and_too_large():
    assert _code(check_size, 0, Limits()) == "empty"
    assert _code(check_size, 1001, Limits(max_bytes=1000)) == "too_large"
    check_size(1000, Limits(max_bytes=1000))


@pytest.mark.integration
def test_text_and_image_are_not_audio(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("meeting notes, not a recording\n" * 20)
    assert _code(ffprobe, text) == "not_audio"
    png = tmp_path / "pic.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", str(png))
    assert _code(ffprobe, png) == "not_audio"


@pytest.mark.integration
def test_damaged_containers_are_corrupt(tmp_path, audio):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 20)
    assert _code(ffprobe, garbage) == "corrupt"
    # an MP4 whose index (moov) never got written, as when a recorder dies mid-way
    mp4 = media.video(tmp_path / "v.mp4", audio / "jfk.flac")
    cut = tmp_path / "cut.m4a"
    data = mp4.read_bytes()
    cut.write_bytes(data[: data.find(b"moov") - 4] if b"moov" in data else data[:4096])
    assert _code(ffprobe, cut) == "corrupt"


@pytest.mark.integration
def test_durations(tmp_path):
    short = media.tone(tmp_path / "short.wav", 0.2)
    info = ffprobe(short)
    assert info.duration_s == pytest.approx(0.2, abs=0.01)
    assert _code(check_duration, info.duration_s, Limits()) == "too_short"
    long = media.tone(tmp_path / "long.wav", 6)
    assert _code(check_duration, ffprobe(long).duration_s, Limits(max_duration_s=5)) == "too_long"
    check_duration(None, Limits())  # unknown length: checked after decoding


@pytest.mark.integration
def test_video_container_probes_its_audio(tmp_path, audio):
    info = ffprobe(media.video(tmp_path / "v.mp4", audio / "jfk.flac"))
    assert info.has_video and info.codec == "aac" and info.container == "mov"
    assert info.duration_s == pytest.approx(11.0, abs=0.2)
