"""Copy a byte stream while hashing it, in bounded memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

BLOCK = 1 << 20


def copy_hashed(src: BinaryIO, dest: Path) -> tuple[int, str]:
    """Stream src into dest; return (bytes, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while block := src.read(BLOCK):
            digest.update(block)
            out.write(block)
            size += len(block)
    return size, digest.hexdigest()
