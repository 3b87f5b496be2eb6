"""Object keys clients may upload to: validated before a presigned URL is handed out."""

from __future__ import annotations

import re
from urllib.parse import urlparse

MAX_KEY_BYTES = 1024  # S3's limit
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class InvalidKey(ValueError):
    """The key would leave the allowed prefixes or is not a plain object key."""


def validate_upload_key(key: str, allowed_prefixes: tuple[str, ...] | list[str]) -> str:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"key must be 1..{MAX_KEY_BYTES} bytes")
    if key.startswith("/") or "://" in key:
        raise InvalidKey(f"key {key!r} must be relative (no leading '/', no scheme)")
    if _BAD_CHARS.search(key):
        raise InvalidKey(f"key {key!r} holds a control character or backslash")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKey(f"key {key!r} has an empty, '.' or '..' part")
    if not any(key.startswith(p) for p in allowed_prefixes):
        raise InvalidKey(f"key {key!r} is outside the allowed prefixes {list(allowed_prefixes)}")
    return key


def split_s3_uri(uri: str, default_bucket: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; a bare key names an object in default_bucket."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise InvalidKey(f"{uri!r} is not s3://bucket/key")
        return parsed.netloc, key
    if "://" in uri:
        raise InvalidKey(f"{uri!r}: only s3:// sources are read from object storage")
    return default_bucket, uri.lstrip("/")
