"""CLI commands: status observer and reconcile."""

from __future__ import annotations

from vibeinsight.cli import app  # noqa: F401
