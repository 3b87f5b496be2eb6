"""The TypeScript client (clients/js): its deno unit tests, and the fixed sentences it ships agree
with the Python side's (vibeinsight/errors.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess

import pytest

from tests.prefect_server import ROOT

CLIENT = ROOT / "clients" / "js"


def deno(*args: str) -> subprocess.CompletedProcess:
    """`deno ARGS` in clients/js, uncoloured, its output captured."""
    exe = shutil.which("deno") or pytest.fail("deno is not installed")
    return subprocess.run([exe, *args], cwd=CLIENT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True,
                          text=True, timeout=300)


def _exporter():
    spec = importlib.util.spec_from_file_location("export_messages", CLIENT / "tools" / "export_messages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_the_clients_sentences_are_the_python_sides():
    from vibeinsight.errors import GENERIC, MESSAGES

    shipped = json.loads((CLIENT / "src" / "messages.json").read_text(encoding="utf-8"))
    assert shipped["codes"] == {code: {"en": en, "ja": ja} for code, (en, ja) in MESSAGES.items()}, \
        "run: .venv/bin/python clients/js/tools/export_messages.py"
    assert shipped["generic"] == {"en": GENERIC[0], "ja": GENERIC[1]}
    assert (CLIENT / "src" / "messages.json").read_text(encoding="utf-8") == _exporter().exported()


@pytest.mark.unit
def test_deno_unit_tests_of_the_client_pass():
    check = deno("check", "mod.ts", "react.ts")
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    out = deno("test", "--allow-read", "--allow-env", "tests/")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    assert " 0 failed" in out.stdout and "passed" in out.stdout


@pytest.mark.unit
def test_the_client_passes_deno_lint():
    """Deno's recommended rules (clients/js/deno.json), the published API's explicit types among them."""
    lint = deno("lint")
    assert lint.returncode == 0, lint.stdout[-5000:] + lint.stderr[-3000:]


@pytest.mark.unit
def test_the_pages_bundle_is_built_from_the_current_sources(tmp_path):
    """clients/web/app.js is committed (a fresh clone serves the page without building): it must be
    what `deno task build-web` makes of the sources now (versions pinned by clients/js/deno.lock)."""
    out = tmp_path / "app.js"
    build = deno("bundle", "--platform", "browser", "--minify", "-o", str(out), "../web/src/app.ts")
    assert build.returncode == 0, build.stderr[-3000:]
    assert out.read_bytes() == (ROOT / "clients" / "web" / "app.js").read_bytes(), \
        "rebuild the page: cd clients/js && deno task build-web"
