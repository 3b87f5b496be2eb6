"""The chunk task both flows run: process-audio on its own chunks, and each transcribe-part run on its
share of a fanned-out recording (issue 21). One task, one cache key: a chunk transcribed by either is a
cache hit for the other, and a re-run part never pays for a finished chunk twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta

from prefect import task
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import registry
from blocks.storage import CHUNK_CACHE_DAYS, ObjectStorage
from blocks.transcriber import ChunkJob, ChunkTranscript, Transcriber
from vibeinsight import paid, tracing
from vibeinsight.errors import PipelineError, TranscriptionFailed

log = logging.getLogger("vibeinsight.flow")

# A backstop behind the API's own timeouts and retries.
CHUNK_TIMEOUT_S = 1800


def _transient(task, task_run, state) -> bool:
    """Retry what may pass (I/O, a busy machine), never a rejected or broken input."""
    try:
        state.result()
    except PipelineError as exc:
        return exc.code in {"storage_failed", "transcription_failed", "internal"}
    except Exception:  # noqa: BLE001 - an unknown error may pass on a retry
        return True
    return False


def chunk_cache_key(context, parameters: dict) -> str:
    """A chunk's transcript is reused when the session, the chunk's content and the settings match.

    The content is named by the upload's sha256, the chunk's span and track and the transcode
    settings: Ogg gives every encode a random stream serial, so the chunk file's own bytes differ
    from run to run even when the audio in it does not.
    """
    job: ChunkJob = parameters["job"]
    transcriber: Transcriber = parameters["transcriber"]
    spec = json.dumps([parameters["session_id"], parameters["content_id"], job.offset, job.duration, job.speaker,
                       job.vocabulary, job.turns, parameters["language"], transcriber.model_name, transcriber.cache_fields()],
                      sort_keys=True, default=str)
    return "chunk-" + hashlib.sha256(spec.encode()).hexdigest()


# Cached results persist so a retried or re-run session never pays for a finished chunk twice;
# with a remote bucket they persist there (transcribe() sets result_storage), because a Fly Machine's
# disk does not outlive its run, and the bucket's lifecycle keeps them as long (blocks.storage).
CHUNK = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient,
             cache_key_fn=chunk_cache_key, cache_expiration=timedelta(days=CHUNK_CACHE_DAYS), persist_result=True)


@task(name="transcribe-chunk", timeout_seconds=CHUNK_TIMEOUT_S, **CHUNK)
def transcribe_chunk(job: ChunkJob, language: str | None, transcriber: Transcriber, progress, spent,
                     session_id: str, content_id: str, api_limit: str) -> ChunkTranscript:
    """One chunk; `spent(usage)` hears what it was billed, failed or not (a cache hit never runs this)."""
    # A Prefect global concurrency limit shared by every run of the pool keeps one busy hour from
    # becoming a 429 storm (create it with `prefect gcl create NAME --limit N`; absent, no cap).
    from prefect.concurrency.sync import concurrency

    slot = concurrency(api_limit, occupy=1, strict=False) if transcriber.api_service() else nullcontext()
    with tracing.span("chunk", session_id, chunk=job.index, offset_s=job.offset, duration_s=round(job.duration, 3),
                      bytes=job.path.stat().st_size, speaker=job.speaker):
        try:
            with slot:
                result = transcriber.transcribe(job, language, on_progress=lambda s: progress(job.index, s))
        except Exception as exc:
            if (usage := getattr(exc, "usage", None)) is not None:  # billed though it failed
                spent(usage)
            if isinstance(exc, PipelineError):
                raise
            raise TranscriptionFailed(f"chunk {job.index}: {exc}") from exc
        if result.usage:
            spent(result.usage)
            result = result.model_copy(update={"paid_by": paid.attempt_tag(current_flow_run_id())})
        return result


def current_flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id)


def booked(storage: ObjectStorage, session_id: str, tag: str) -> bool:
    """Whether an earlier run of the session booked attempt `tag`'s calls (its marker is in the bucket)."""
    try:
        storage.get_bytes(paid.booked_marker(session_id, tag))
    except Exception:  # noqa: BLE001 - no marker (or the bucket away): not known to be booked
        return False
    return True


def count_unbooked(transcripts: list[ChunkTranscript], accounted: set[str], storage: ObjectStorage, session_id: str,
                   usage: list) -> None:
    """Add to `usage` what the chunks that came back from the cache were billed to attempts nobody booked
    (vibeinsight.paid), and add those attempts to `accounted`."""
    found, attempts = paid.unbooked(((t.paid_by, t.usage) for t in transcripts), accounted,
                                    lambda tag: booked(storage, session_id, tag))
    if found:
        log.info("%d cached chunk(s) paid by attempt(s) that booked nothing: %s", len(found), sorted(attempts))
    usage += found
    accounted |= attempts


def mark_booked(accounted: set[str], storage: ObjectStorage, session_id: str) -> None:
    """After the run's usage reached the ledger: a marker for each attempt it booked. Best effort: a missing
    marker only lets a later run of the session book those cached chunks again."""
    for tag in accounted:
        try:
            storage.put_bytes(paid.booked_marker(session_id, tag), b"", "application/octet-stream")
        except Exception as exc:  # noqa: BLE001
            log.warning("usage marker of %s not written: %s", tag, exc)


def run_chunks(jobs: list[ChunkJob], language: str | None, transcriber: Transcriber, storage: ObjectStorage,
               progress: Callable[[int, float], None], spent: Callable, session_id: str, content_id: str,
               api_limit: str) -> list[ChunkTranscript]:
    """Every job as a transcribe-chunk task run, in parallel up to the transcriber's own limit (threads:
    the work is I/O or native code); the results in job order, or the first failed chunk's own error."""
    chunk_task = transcribe_chunk
    if (results_in_bucket := registry.result_storage(storage)) is not None:
        chunk_task = transcribe_chunk.with_options(result_storage=results_in_bucket)
    with ThreadPoolTaskRunner(max_workers=transcriber.parallel_chunks()) as runner:
        futures = [runner.submit(chunk_task, dict(
            job=job, language=language, transcriber=transcriber, progress=progress, spent=spent,
            session_id=session_id, content_id=content_id, api_limit=api_limit)) for job in jobs]
        for f in futures:  # every chunk runs to its end: a failed one leaves the others' (paid) work counted
            f.wait()
    failed = next((f for f in futures if not f.state.is_completed()), None)
    if failed is not None:
        failed.result()  # raises the chunk's own error
    return [f.result() for f in futures]
