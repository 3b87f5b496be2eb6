"""The package stands alone: its data ships inside it (the shared limits identical to the Edge
Function's copy), the image installs the wheel with no source folder beside it, and a wheel built
here, installed into a new virtual environment outside the checkout, runs a session to COMPLETED."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("vibeinsight", "flows", "blocks", "deployments", "infra")


@pytest.mark.unit
def test_packaged_limits_are_the_edge_functions_limits():
    from vibeinsight.settings import LIMITS_FILE, SHARED_LIMITS_PATH, get_settings

    assert LIMITS_FILE.is_relative_to(ROOT / "vibeinsight")  # inside the package, shipped as package data
    edge = (ROOT / SHARED_LIMITS_PATH).read_bytes()
    assert LIMITS_FILE.read_bytes() == edge, (
        f"{LIMITS_FILE.relative_to(ROOT)} differs from {SHARED_LIMITS_PATH}: copy the Edge Function's file over it")
    assert get_settings().limits.max_bytes == json.loads(edge)["max_bytes"]


def _stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's lines (continuations joined), split at each FROM."""
    text = re.sub(r"\\\n", " ", dockerfile)
    stages: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages and line.strip() and not line.startswith("#"):
            stages[-1].append(line)
    return stages


@pytest.mark.unit
def test_image_installs_the_wheel_and_copies_no_source_beside_it():
    stages = _stages((ROOT / "Dockerfile").read_text())
    build, final = stages[0], stages[-1]
    assert any(re.search(r"pip wheel .*--wheel-dir (\S+) \.", line) and re.search(r"pip install .*\.whl", line)
               for line in build), "the build stage installs a built wheel, not the source tree"
    for line in final:
        if line.startswith("COPY ") and "--from=" not in line:
            sources = [a for a in line.split()[1:] if not a.startswith("--")][:-1]
            assert not [s for s in sources if s.split("/")[0] in SOURCE_DIRS], line
    # Prefect's logging config is read from the installed package, for the image's Python version.
    version = re.match(r"FROM python:(\d+\.\d+)", final[0]).group(1)
    env = " ".join(line for line in final if line.startswith("ENV "))
    path = re.search(r"PREFECT_LOGGING_SETTINGS_PATH=(\S+)", env).group(1)
    assert path == f"/opt/venv/lib/python{version}/site-packages/vibeinsight/data/logging.yml"
    assert (ROOT / "vibeinsight" / "data" / "logging.yml").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from the folders the image's build stage copies (nothing else of the
    checkout: no infra/, no tests/), in a copy so the build leaves nothing in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("vibeinsight", "flows", "blocks", "deployments"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(out), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("vibeinsight-*.whl")
    return path


def _fresh_venv(where: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; the project's dependencies come from the test venv's
    site-packages through a .pth line (a plain path: the editable install's own .pth files, which
    point at the checkout, are not processed there)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    deps = Path(sysconfig.get_paths()["purelib"])
    assert not deps.is_relative_to(ROOT) or ".venv" in deps.parts
    (purelib / "test-deps.pth").write_text(f"{deps}\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    return python


@pytest.mark.e2e
def test_wheel_in_a_fresh_venv_outside_the_checkout_processes_the_sample(wheel, tmp_path, model_cache):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {"vibeinsight/data/limits.json", "vibeinsight/data/providers.json", "vibeinsight/data/logging.yml",
            "vibeinsight/samples/standup-en.ogg"} <= names
    assert not [n for n in names if n.startswith(("infra/", "tests/"))]

    python = _fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "elsewhere"  # the cwd: outside the checkout
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(model_cache, target_is_directory=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "VIBEINSIGHT_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(VIBEINSIGHT_HOME=str(home), HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")

    # The checkout is not importable: every module of the project comes from the new venv.
    probe = subprocess.run([str(python), "-c", "import json, sys, vibeinsight, flows, blocks, deployments; "
                            "print(json.dumps({'files': [m.__file__ for m in (vibeinsight, flows, blocks, deployments)],"
                            " 'path': sys.path}))"], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    venv = (tmp_path / "venv").resolve()
    for file in seen["files"]:
        assert Path(file).resolve().is_relative_to(venv), file
    for entry in seen["path"]:
        assert not entry or not Path(entry).resolve().is_relative_to(ROOT) or ".venv" in Path(entry).parts, entry
    cannot = subprocess.run([str(python), "-c", "import tests"], capture_output=True, text=True, cwd=work, env=env)
    assert cannot.returncode != 0  # the checkout's tests package is out of reach too

    sample = venv / Path(seen["files"][0]).resolve().relative_to(venv).parent / "samples" / "standup-en.ogg"
    run = subprocess.run([str(python.parent / "vibeinsight"), "process", str(sample), "--language", "en", "--json"],
                         capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["status"] == "COMPLETED", doc.get("error")
    assert "friday" in doc["transcript"]["text"].lower()
