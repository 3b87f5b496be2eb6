"""CLI commands: upload-url (cloud storage)."""

from __future__ import annotations

from vibeinsight.cli import app  # noqa: F401
