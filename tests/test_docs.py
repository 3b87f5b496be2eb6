"""The docs cannot drift: the generated pages equal what the code says now, the site builds with no
broken link or missing page, and the README stays a front page that links into it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools import docs_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
@pytest.mark.parametrize("page", sorted(docs_reference.PAGES))
def test_generated_page_is_current(page):
    committed = (ROOT / page).read_text() if (ROOT / page).is_file() else ""
    assert committed == docs_reference.PAGES[page](), f"{page} is stale: run .venv/bin/python tools/docs_reference.py"


@pytest.mark.unit
def test_configuration_reference_names_every_setting():
    """Each field of the settings models and of the pool's variables has its row, with a description."""
    from pydantic_settings import BaseSettings

    from deployments.fly_worker.config import FlyMachinesVariables
    from vibeinsight.settings import Settings

    page = (ROOT / "docs/reference/configuration.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")}
    groups = [(Settings, [n for n, f in Settings.model_fields.items()
                          if not (isinstance(f.default_factory, type) and issubclass(f.default_factory, BaseSettings))])]
    groups += [(f.default_factory, list(f.default_factory.model_fields)) for f in Settings.model_fields.values()
               if isinstance(f.default_factory, type) and issubclass(f.default_factory, BaseSettings)]
    for cls, names in groups:
        for name in names:
            field = cls.model_fields[name]
            variable = " or ".join(f"`{v}`" for v in docs_reference.env_names(cls, name, field))
            assert variable in rows, f"{cls.__name__}.{name}"
            assert field.description, f"{cls.__name__}.{name} needs a description (the reference shows it)"
    offered = FlyMachinesVariables.model_json_schema()["properties"]  # `command` is not a variable (issue 19)
    assert "command" not in offered and "`command`" not in rows
    for name in offered:
        assert f"`{name}`" in rows
    from vibeinsight.settings import FlyWorkerSettings  # the worker's own environment
    for name, field in FlyWorkerSettings.model_fields.items():
        assert field.description and " or ".join(f"`{v}`" for v in docs_reference.env_names(FlyWorkerSettings, name, field)) in rows


@pytest.mark.integration
def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()


@pytest.mark.unit
def test_readme_is_a_front_page_linking_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (ROOT / link).exists(), link
