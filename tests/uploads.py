"""Test helper: hand a local file to the flow as the CLI does, placed among the local bucket's uploads
(a run with local storage reads nothing else)."""

from __future__ import annotations

from pathlib import Path


def as_upload(source: str | Path, owner: str | None = None) -> str:
    """The path under the local bucket's uploads/ the flow may read (a hard link to `source`); with object
    storage, `source` as given."""
    from blocks import registry
    from blocks.storage import as_upload

    return as_upload(registry.storage(), str(source), owner)
