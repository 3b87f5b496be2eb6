"""CLI commands: trigger, stack (deployments)."""

from __future__ import annotations

from vibeinsight.cli import app  # noqa: F401
