"""The process-audio flow's parameters, checked in the flow itself.

A run can be started from the Prefect UI or API with any parameters, not only through the CLI or
the Edge Function, so the flow trusts none of them: ids are UUIDs (lower-cased), the workspace is
a resolved folder under the work folder, and an object-storage source is an upload of that user
in the configured bucket.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from vibeinsight.errors import InputRejected
from vibeinsight.keys import InvalidKey, split_s3_uri, validate_upload_key

# Vocabulary: at most 100 terms of 1-100 characters (the flow's parameter, a part's request, the Edge Function).
MAX_VOCABULARY = 100
MAX_TERM_CHARS = 100


def valid_terms(words: list) -> bool:
    """Every vocabulary term a string of 1-MAX_TERM_CHARS characters once stripped."""
    return all(isinstance(w, str) and 0 < len(w.strip()) <= MAX_TERM_CHARS for w in words)


def canonical_uuid(value: object) -> str | None:
    """The lower-case canonical form of a UUID string, or None when value is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def check_ids(session_id: str | None, user_id: str | None) -> None:
    """InputRejected(invalid_parameter) unless each id given is a UUID."""
    for name, value in (("session_id", session_id), ("user_id", user_id)):
        if value is not None and canonical_uuid(value) is None:
            raise InputRejected(f"{name} must be a UUID, got {value[:80]!r}", "invalid_parameter")


def workspace_for(work_dir: Path, session_id: str) -> Path:
    """The session's own folder, resolved; InputRejected(invalid_parameter) if it would leave work_dir."""
    root = work_dir.resolve()
    path = (root / session_id).resolve()
    if path.parent != root:
        raise InputRejected(f"session_id {session_id[:80]!r} does not name a folder under the work folder",
                            "invalid_parameter")
    return path


def check_s3_source(source: str, bucket: str, upload_prefixes: list[str], user_id: str | None) -> None:
    """An object-storage source must be `s3://<bucket>/<prefix><user_id>/…` (a bare key means the bucket).

    InputRejected(source_not_allowed) otherwise: a run must never read another user's upload or any
    other object it was pointed at."""
    if user_id is None:
        raise InputRejected("user_id is required to read an upload from object storage", "source_not_allowed")
    try:
        got_bucket, key = split_s3_uri(source, bucket)
        if got_bucket != bucket:
            raise InvalidKey(f"bucket {got_bucket!r} is not the configured bucket")
        validate_upload_key(key, [f"{p.rstrip('/')}/{user_id}/" for p in upload_prefixes])
    except InvalidKey as exc:
        raise InputRejected(f"source {source[:200]!r} is not an upload of this user: {exc}", "source_not_allowed") from exc


def row_ids(params: dict, flow_run_id: str) -> tuple[str, str | None]:
    """(session_id, user_id) of a flow run's status row, from its parameters as given.

    A session_id that is not a UUID never keys a row (nor a result, nor a folder): the run's own
    id does, as when none was given; a user_id that is not a UUID is dropped."""
    return (canonical_uuid(params.get("session_id")) or str(flow_run_id).lower(),
            canonical_uuid(params.get("user_id")))
