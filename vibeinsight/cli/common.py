"""What every command shares: exit codes, `fail`, argument checks."""

from __future__ import annotations

import json
import sys
import uuid
from typing import NoReturn

import typer

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2


def fail(code: str, message: str, exit_code: int = EXIT_REJECTED, document: dict | None = None) -> NoReturn:
    """One line `error: CODE: message` on stderr (and `document` on stdout for --json), then exit.

    exit 2: bad input or settings; exit 1: anything else that failed.
    """
    print(f"error: {code}: {message}", file=sys.stderr)
    if document is not None:
        print(json.dumps(document, ensure_ascii=False))
    raise typer.Exit(exit_code)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
