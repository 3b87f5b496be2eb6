"""`vibeinsight blocks save|register`: the pipeline's Prefect blocks on the Prefect server."""

from __future__ import annotations

import json

import typer

from vibeinsight.cli.common import EXIT_FAILED, fail

app = typer.Typer(no_args_is_help=True, help="The pipeline's Prefect blocks (storage, transcriber, analyzer, …)")


def _require_api() -> None:
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail("no_prefect_api", "set PREFECT_API_URL to the Prefect server that keeps the blocks")


@app.command("save")
def save(overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite")) -> None:
    """Save the blocks the current settings describe under the name runs load ("vibeinsight").

    Edit them in the Prefect UI afterwards: runs use the saved document, the environment fills in
    only where none is saved."""
    _require_api()
    from blocks.registry import BLOCK_NAME, save_all

    try:
        saved = save_all(overwrite=overwrite)
    except ValueError as exc:  # already saved and --no-overwrite, or a bad setting
        fail("blocks_save", str(exc))
    except Exception as exc:  # noqa: BLE001 - the server is down or refused
        fail("blocks_save", f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    print(json.dumps({role: f"{slug}/{BLOCK_NAME}" for role, slug in saved.items()}))


@app.command("register")
def register() -> None:
    """Register the block types (so the UI can create them) without saving any document."""
    _require_api()
    from prefect.blocks.core import Block

    import blocks.registry  # noqa: F401 - imports every block module

    registered = []
    for cls in _block_classes(Block):
        cls.register_type_and_schema()
        registered.append(cls.get_block_type_slug())
    print(json.dumps(sorted(registered)))


def _block_classes(base) -> list[type]:
    found = []
    for sub in base.__subclasses__():
        if sub.__module__.startswith("blocks."):
            found.append(sub)
        found.extend(_block_classes(sub))
    return list(dict.fromkeys(found))
