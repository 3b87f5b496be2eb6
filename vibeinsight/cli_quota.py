"""CLI commands: quota report."""

from __future__ import annotations

from vibeinsight.cli import app  # noqa: F401
