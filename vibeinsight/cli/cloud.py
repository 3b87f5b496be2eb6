"""`vibeinsight upload-url`: presigned uploads (cloud storage)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from vibeinsight.cli.common import EXIT_FAILED, fail

app = typer.Typer()


@app.command("upload-url")
def upload_url(
    key: str = typer.Argument(..., help="object key, under an allowed prefix (default uploads/)"),
    content_type: str = typer.Option("audio/mpeg", "--content-type",
                                     help="one of the shared upload types (infra/supabase/functions/_shared/limits.json)"),
    expires: int = typer.Option(3600, "--expires", min=1, max=7 * 24 * 3600, help="seconds the URL stays valid"),
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", min=1,
                                            help="give a presigned POST whose policy caps the size"),
) -> None:
    """Print a presigned upload for a client as JSON: a PUT URL, or a POST form with a size limit."""
    from blocks import registry
    from vibeinsight.keys import InvalidKey
    from vibeinsight.settings import get_settings

    # The Edge Function's own list and size cap (one file for both); ingest still probes the bytes.
    limits = get_settings().limits
    if content_type.split(";")[0].strip().lower() not in limits.content_types:
        fail("invalid_content_type",
             f"content type {content_type!r} is not an upload type: {', '.join(limits.content_types)}")
    if max_bytes is not None and max_bytes > limits.max_bytes:
        fail("too_large", f"--max-bytes {max_bytes} is over the upload limit of {limits.max_bytes} bytes")
    store = registry.storage()
    if not hasattr(store, "presign_upload"):
        fail("no_cloud_storage", "set FLY_S3_ENDPOINT (or VIBEINSIGHT_STORAGE=s3) to presign uploads", EXIT_FAILED)
    try:
        presigned = store.presign_upload(key, content_type, expires, max_bytes)
    except InvalidKey as exc:
        fail("invalid_key", str(exc))
    print(json.dumps(presigned.model_dump(mode="json"), ensure_ascii=False))
