from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
SAMPLE = ROOT / "vibeinsight" / "samples" / "standup-en.ogg"


def pytest_configure(config):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not (SHARED_AUDIO / "transcripts.json").is_file():
        pytest.fail(f"shared test audio missing at {SHARED_AUDIO}")
    return SHARED_AUDIO


@pytest.fixture(scope="session")
def references(shared_audio) -> dict:
    return json.loads((shared_audio / "transcripts.json").read_text())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One joined copy of the base model for the whole test session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture()
def home(tmp_path, monkeypatch, model_cache) -> Path:
    """A fresh VIBEINSIGHT_HOME per test (bucket, status db, workspace)."""
    from vibeinsight.settings import get_settings

    h = tmp_path / "home"
    monkeypatch.setenv("VIBEINSIGHT_HOME", str(h))
    (h).mkdir()
    (h / "models").symlink_to(model_cache, target_is_directory=True)
    get_settings.cache_clear()
    yield h
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API (SQLite) for the whole session: entering it costs ~20 s here."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def require_tools():
    for tool in ("ffmpeg", "ffprobe"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")


require_tools()
