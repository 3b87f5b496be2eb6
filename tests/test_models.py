import os

import pytest

from vibeinsight import models

pytestmark = pytest.mark.integration


def test_base_is_joined_once_and_checked(tmp_path):
    d = models.model_dir("base", tmp_path)
    model_bin = d / "model.bin"
    assert model_bin.stat().st_size == models.BASE_BYTES
    assert {p.name for p in d.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}
    mtime = model_bin.stat().st_mtime_ns
    assert models.model_dir("base", tmp_path) == d
    assert model_bin.stat().st_mtime_ns == mtime  # reused, not joined again


def test_damaged_cache_is_rebuilt(tmp_path):
    d = models.model_dir("base", tmp_path)
    with (d / "model.bin").open("r+b") as f:
        f.truncate(1000)
    models.model_dir("base", tmp_path)
    assert (d / "model.bin").stat().st_size == models.BASE_BYTES
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_tiny_en_comes_from_its_package(tmp_path):
    d = models.model_dir("tiny.en", tmp_path)
    assert (d / "model.bin").is_file() and not os.listdir(tmp_path)
    assert not models.is_multilingual("tiny.en") and models.is_multilingual("base")


def test_a_model_is_loaded_once_per_folder_whatever_path_reaches_it(tmp_path, model_cache):
    """Each test's VIBEINSIGHT_HOME/models is a symlink to one cache: one load serves them all, and
    another folder gets its own."""
    from blocks.transcriber import LocalWhisper

    (tmp_path / "a").symlink_to(model_cache, target_is_directory=True)
    (tmp_path / "b").symlink_to(model_cache, target_is_directory=True)
    one, two = (LocalWhisper(model="base", model_cache=str(tmp_path / n), concurrency=1, cpu_threads=1)
                for n in ("a", "b"))
    assert one.whisper_model() is two.whisper_model()
    other = LocalWhisper(model="tiny.en", model_cache=str(tmp_path / "a"), concurrency=1, cpu_threads=1)
    assert other.whisper_model() is not one.whisper_model()
