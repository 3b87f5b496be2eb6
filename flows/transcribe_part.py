"""transcribe-part: one share of a long recording's chunks, transcribed in its own flow run (issue 21).

process-audio starts these as linked subflow runs of the `transcribe-part/api` deployment, so each
runs in its own Machine. A part reads its chunks from the session's prefix in the bucket, runs the
same transcribe-chunk task (and cache) as process-audio, embeds its speakers on a mono mix, and
leaves its result (or its error code) in the bucket for the parent. It never writes the session's
status row or result: it has no status hooks, and the status observer skips its flow.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from prefect import flow
from prefect.context import get_run_context
from pydantic import ValidationError

from blocks import registry
from blocks.transcriber import ChunkJob, Transcriber
from flows.chunks import current_flow_run_id, run_chunks
from vibeinsight import logs, paid, tracing
from vibeinsight.cores import usable_cores
from vibeinsight.diarization import Diarizer
from vibeinsight.errors import InputRejected, error_code, user_message
from vibeinsight.fanout import PART_FLOW, PartError, PartRequest, PartResult, SpeakerWindows
from vibeinsight.params import canonical_uuid, workspace_for
from vibeinsight.settings import FlowSettings, Settings, get_settings

log = logging.getLogger("vibeinsight.part")
tracing.setup()  # a deployment's run imports this module before Prefect opens its span


def check_request(session_id: str, part: dict) -> PartRequest:
    """The part's parameters, checked before anything is read: InputRejected(invalid_parameter) otherwise."""
    try:
        req = PartRequest.model_validate(part)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputRejected(f"part parameters: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                            "invalid_parameter") from exc
    if canonical_uuid(session_id) != req.session_id:
        raise InputRejected("session_id and the part's session differ", "invalid_parameter")
    return req


# No status hooks: the parent alone writes the session's row (one progress figure, monotonic).
@flow(name=PART_FLOW, log_prints=False, timeout_seconds=FlowSettings().timeout_s)
def transcribe_part(session_id: str, part: dict) -> str:
    """Transcribe one part's chunks; returns the bucket key of its PartResult.

    session_id: the session the part belongs to (the Fly worker books the Machine time under it);
    part: a vibeinsight.fanout.PartRequest as JSON."""
    flow_run_id = str(get_run_context().flow_run.id)
    req = check_request(session_id, part)
    settings = get_settings()
    storage = registry.storage(settings)
    if storage.role() == "local":  # the chunks travel through the bucket; a local one is another machine's
        raise InputRejected("transcribe-part reads its chunks from the S3 bucket; none is configured",
                            "invalid_parameter")
    workspace = workspace_for(settings.work_dir, flow_run_id)
    result = PartResult(part=req.part, attempt=paid.attempt_tag(flow_run_id))  # kept when the share fails
    usage: list = []
    with logs.bind(session_id=req.session_id, flow_run_id=flow_run_id):
        try:
            workspace.mkdir(parents=True, exist_ok=True)
            paths = _download(storage, req, workspace)
            result = transcribe_share(req, paths, settings, storage, usage)
        except BaseException as exc:
            code = error_code(exc)
            result.error = PartError(code=code, message=user_message(code, req.language))
            log.warning("part %d failed: %s: %s", req.part, code, exc, extra={"error_code": code})
            raise
        finally:
            result.usage = [u.model_dump(mode="json") for u in usage]
            try:
                storage.put_bytes(req.result_key, result.model_dump_json().encode(), "application/json")
            except Exception as exc:  # noqa: BLE001 - the parent then sees the run's state alone
                log.warning("part %d result not stored: %s", req.part, exc)
            shutil.rmtree(workspace, ignore_errors=True)
    return req.result_key


def transcribe_share(req: PartRequest, paths: dict, settings: Settings, storage, usage: list,
                     progress: Callable[[int, float], None] = lambda i, s: None,
                     transcriber: Transcriber | None = None) -> PartResult:
    """A part's transcripts, and its speaker windows when asked, from its chunk files ({index: path}):
    what a part run does with the chunks it downloaded, and the parent with the share it keeps.
    `usage` hears what each request was billed, even when the share fails."""
    result = PartResult(part=req.part, attempt=paid.attempt_tag(current_flow_run_id()))
    transcriber = transcriber or registry.transcriber(settings)
    lang = transcriber.check_language(req.language or "auto")
    jobs = [ChunkJob(index=c.index, path=paths[c.index], offset=c.offset, duration=c.duration,
                     speaker=c.speaker, vocabulary=req.vocabulary or None) for c in req.chunks]
    # speaker embeddings beside the transcription: the API waits on the network, this on the CPU
    with ThreadPoolExecutor(max_workers=1) as pool:
        windows = pool.submit(_embed, req, paths, settings) if req.diarize else None
        transcripts = run_chunks(jobs, lang, transcriber, storage, progress=progress, spent=usage.append,
                                 session_id=req.session_id, content_id=req.content_id,
                                 api_limit=settings.api_concurrency_limit)
        if windows is not None:
            try:
                result.windows = windows.result()
            except Exception as exc:  # noqa: BLE001 - the parent decides, by VIBEINSIGHT_DIARIZE
                log.warning("speaker embeddings of part %d failed: %s", req.part, exc)
                result.warnings.append("diarization_failed")
    result.transcripts = [t.model_dump(mode="json") for t in transcripts]
    return result


def _download(storage, req: PartRequest, workspace) -> dict:
    """The part's chunks from the bucket into the run's workspace: {chunk index: path}."""
    def one(c):
        path = workspace / PurePosixPath(c.key).name  # the parent's name: the chunk's index comes first
        path.write_bytes(storage.get_bytes(c.key))
        return c.index, path

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, req.chunks))


def _embed(req: PartRequest, paths: dict, settings) -> SpeakerWindows:
    """The part's speaker windows (Diarizer.add, without the clustering: the parent does it over all parts)."""
    cfg = settings.diarize
    d = Diarizer(threshold=cfg.threshold, threads=cfg.threads or usable_cores())
    for c in req.chunks:
        d.add_file(paths[c.index], c.offset)
    return SpeakerWindows.of(*d.windows())
