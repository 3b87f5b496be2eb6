"""Start a process-audio run through Prefect's REST API, as the Edge Function does.

PENDING row first (clients see the session at once), then
POST /api/deployments/name/{flow}/{deployment} to find the id and
POST /api/deployments/{id}/create_flow_run with idempotency_key = session id, so a retried
trigger returns the run it already made instead of starting a second one.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from vibeinsight import tracing

# Prefect's flow-run label holding a W3C traceparent (prefect.telemetry.run_telemetry.LABELS_TRACEPARENT_KEY;
# named here so triggering imports no Prefect).
LABELS_TRACEPARENT_KEY = "__OTEL_TRACEPARENT"

DEPLOYMENT = "process-audio/api"
PENDING_SEQ = 1


class TriggerError(RuntimeError):
    pass


@dataclass
class Triggered:
    session_id: str
    flow_run_id: str
    deployment_id: str
    state: str


RETRY_STATUSES = {429, 502, 503, 504}  # Prefect answers 503 for errors a client may retry (a locked database)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, urllib.error.HTTPError) and exc.code in RETRY_STATUSES


def _call(method: str, url: str, body: dict | None = None, api_key: str | None = None, attempts: int = 5) -> dict:
    """One JSON call; retried with back-off on a retryable status (safe: create_flow_run is idempotent)."""
    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5),
                        retry=retry_if_exception(_retryable), reraise=True)
    try:
        return retrying(_call_once, method, url, body, api_key)
    except urllib.error.HTTPError as exc:
        raise TriggerError(f"{method} {url}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    except OSError as exc:
        raise TriggerError(f"{method} {url}: {exc}") from exc


def _call_once(method: str, url: str, body: dict | None, api_key: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def trigger(source: str, session_id: str | None = None, user_id: str | None = None, language: str = "auto",
            api_url: str | None = None, api_key: str | None = None, deployment: str = DEPLOYMENT,
            write_pending: bool = True) -> Triggered:
    api_url = (api_url or os.environ.get("PREFECT_API_URL") or "").rstrip("/")
    if not api_url:
        raise TriggerError("PREFECT_API_URL is not set (the Prefect server's /api URL)")
    api_key = api_key or os.environ.get("PREFECT_API_KEY")
    session_id = str(uuid.UUID(session_id)) if session_id else str(uuid.uuid4())
    if user_id:
        user_id = str(uuid.UUID(user_id))
    source = _as_upload(source, user_id)
    if write_pending:
        _write_pending(session_id, user_id, deployment)
    flow_name, _, dep_name = deployment.partition("/")
    dep = _call("GET", f"{api_url}/deployments/name/{flow_name}/{dep_name}", api_key=api_key)
    run = _call("POST", f"{api_url}/deployments/{dep['id']}/create_flow_run", {
        "parameters": {"source": source, "session_id": session_id, "user_id": user_id, "language": language},
        "idempotency_key": session_id,
        "tags": ["trigger:cli"],
        # Prefect parents the run's span on this label: the run joins the session's trace.
        "labels": {LABELS_TRACEPARENT_KEY: tracing.traceparent(session_id)},
    }, api_key=api_key)
    return Triggered(session_id, run["id"], dep["id"], (run.get("state") or {}).get("type", "SCHEDULED"))


def _as_upload(source: str, user_id: str | None) -> str:
    """With local storage (a process pool on this host) a run reads only the bucket's uploads: a local
    file is placed there first, as `vibeinsight process` does."""
    from blocks import registry
    from blocks.storage import as_upload

    return as_upload(registry.storage(), source, user_id)


def _write_pending(session_id: str, user_id: str | None, deployment: str) -> None:
    from blocks import registry
    from vibeinsight.schemas import Status, StatusUpdate

    # seq 1: older than any state a run writes, so a repeated trigger never moves the row back
    registry.status_store().apply(StatusUpdate(session_id=session_id, user_id=user_id, status=Status.PENDING,
                                               seq=PENDING_SEQ, stage="queued", progress=0), deployment=deployment)
