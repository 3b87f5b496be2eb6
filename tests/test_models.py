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
