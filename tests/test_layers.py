"""The layer rule the README states: cli → deployments → flows → blocks → core; core imports none above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
# What each layer may not import (a package name, or a dotted module prefix).
FORBIDDEN = {
    "core": ("flows", "blocks", "deployments", "vibeinsight.cli"),
    "blocks": ("flows", "deployments", "vibeinsight.cli"),
    "flows": ("deployments", "vibeinsight.cli"),
    "deployments": ("vibeinsight.cli",),
}


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "vibeinsight":
        return None if rel[1] in ("cli", "__main__.py") else "core"  # the entry points sit on top
    return rel[0] if rel[0] in FORBIDDEN else None


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def sources() -> list[Path]:
    return [p for d in ("vibeinsight", "flows", "blocks", "deployments") for p in sorted((ROOT / d).rglob("*.py"))]


def test_no_layer_imports_one_above_it():
    breaches = []
    for path in sources():
        layer = layer_of(path)
        if layer is None:
            continue
        for name in imported(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer]):
                breaches.append(f"{path.relative_to(ROOT)} ({layer}) imports {name}")
    assert not breaches, "\n".join(breaches)


def test_no_block_reads_settings_itself():
    """Blocks are built in one place (blocks/registry.py) from the settings groups."""
    readers = [p.name for p in sorted((ROOT / "blocks").glob("*.py"))
               if p.name != "registry.py" and {"vibeinsight.settings.get_settings", "vibeinsight.settings.Settings"}
               & imported(p)]
    assert readers == []


def test_flows_folder_holds_flows_their_tasks_and_hooks_only():
    """A module of tasks two flows share (flows/chunks.py, flows/fan_out.py) belongs here too."""
    for path in sorted((ROOT / "flows").glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        assert "@flow(" in text or "@task(" in text or "HOOKS = " in text, \
            f"{path.name} defines neither a flow, a task nor hooks"


def test_the_cli_registers_its_commands_explicitly():
    init = (ROOT / "vibeinsight" / "cli" / "__init__.py").read_text()
    modules = sorted(p.stem for p in (ROOT / "vibeinsight" / "cli").glob("*.py")
                     if "typer.Typer(" in p.read_text() and p.stem != "__init__")
    for mod in modules:
        assert f"{mod}.app" in init, f"vibeinsight/cli/{mod}.py is not added with add_typer"
