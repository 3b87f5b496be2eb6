"""Object storage for uploads and results. LocalBucket is a folder; the S3 block comes later."""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

from vibeinsight.errors import InputRejected
from vibeinsight.hashing import copy_hashed


class FetchedObject(BaseModel):
    uri: str
    path: Path
    bytes: int
    sha256: str


class ObjectStorage(Block):
    """Where uploads come from and results go. Never modifies or deletes an upload."""

    _block_type_name = "VibeInsight Object Storage"

    def fetch(self, uri: str, dest_dir: Path) -> FetchedObject:
        """Copy the upload at uri into dest_dir (streamed and hashed on the way)."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / ("upload" + _suffix(uri))
        with self._open(uri) as src:
            size, sha = copy_hashed(src, dest)
        return FetchedObject(uri=uri, path=dest, bytes=size, sha256=sha)

    def put_json(self, key: str, document: Any) -> str:
        data = json.dumps(document, ensure_ascii=False, indent=2, default=str).encode()
        return self.put_bytes(key, data, "application/json")

    @abstractmethod
    def _open(self, uri: str):  # -> BinaryIO context manager
        ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        ...


class LocalBucket(ObjectStorage):
    """A folder standing in for the bucket; SOURCE may be any readable local path."""

    _block_type_name = "VibeInsight Local Bucket"

    root: str = Field(description="folder that holds results/ and reports/")

    def _open(self, uri: str):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise InputRejected(f"no such file: {path}", "not_found")
        if not os.access(path, os.R_OK):
            raise InputRejected(f"cannot read {path}", "not_found")
        return path.open("rb")

    def _path(self, key: str) -> Path:
        root = Path(self.root).resolve()
        path = (root / key).resolve()
        if root not in path.parents:
            raise ValueError(f"key {key!r} leaves the bucket")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a document
        return key

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()


def _suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    suffix = Path(name).suffix
    return suffix if 1 < len(suffix) <= 8 and suffix[1:].isalnum() else ""
