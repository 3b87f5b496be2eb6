"""process-audio's side of a fan-out (issue 21): chunks to the bucket, one `transcribe-part/api` run
per part (linked subflow runs, each in its own Machine), their progress into the session's one bar,
a crashed or failed part run again once, and the parts' transcripts and speaker windows back.

Cancelling the parent cancels its parts: the parent does so itself when its run is interrupted, and
Prefect's server cancels a cancelled run's linked subflow runs as a backstop (its cancellation
clean-up service), whereupon the Fly worker deletes their Machines.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from blocks.transcriber import ChunkTranscript
from flows.chunks import booked
from vibeinsight.diarization import Diarization, Diarizer
from vibeinsight.errors import PipelineError, TranscriptionFailed
from vibeinsight.fanout import (
    PART_DEPLOYMENT,
    PartChunk,
    PartRequest,
    PartResult,
    Progress,
    next_step,
    plan_parts,
    run_prefix,
    should_fan_out,
)
from vibeinsight.schemas import PartInfo, TranscodeInfo
from vibeinsight.usage import ServiceUsage

if TYPE_CHECKING:
    from flows.process_audio import Run, SpeakerRequest

log = logging.getLogger("vibeinsight.fanout")


@dataclass
class PartRun:
    request: PartRequest
    audio_s: float
    flow_run_id: UUID | None = None
    attempts: int = 0
    wall_s: float | None = None
    result: PartResult | None = None


def part_deployment_id(run: Run) -> UUID | None:
    """The transcribe-part deployment when this run is itself a deployment's (a Machine of the pool);
    None for `vibeinsight process`, a served flow, or a server without that deployment."""
    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx else None
    if flow_run is None or flow_run.deployment_id is None:
        return None
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(PART_DEPLOYMENT).id
    except Exception as exc:  # noqa: BLE001 - no such deployment (or the API away): one run does it all
        log.info("no fan-out: %s not readable (%s)", PART_DEPLOYMENT, exc)
        return None


def pays(compact: TranscodeInfo, run: Run) -> bool:
    """Fan out? By VIBEINSIGHT_FANOUT*, the speech, the bucket, and the part deployment being there."""
    cfg = run.settings.fanout
    speech = compact.speech_s if compact.speech_s is not None else max((c.end for c in compact.chunks), default=0.0)
    if not should_fan_out(cfg.mode, speech, cfg.min_s, deployed=True, remote_storage=run.storage.role() != "local"):
        return False
    return part_deployment_id(run) is not None


# A task: the part runs show in the UI as its children. One attempt: a part that crashed is run again
# inside it, and a re-run of the parent finds its part runs by their idempotency keys.
@task(name="fan-out", cache_policy=NO_CACHE)
def transcribe_parts(compact: TranscodeInfo, language: str, run: Run, vocabulary: list[str] | None,
                     who: SpeakerRequest, speakers: bool) -> tuple[list[ChunkTranscript], Diarization | None]:
    """The chunks' transcripts (in chunk order) and, when `speakers`, the diarization over all parts."""
    cfg = run.settings.fanout
    chunks = compact.chunks
    plan = plan_parts([(c.start, c.end) for c in chunks], cfg.part_s, cfg.max_parts, cfg.lead_s)
    prefix = run_prefix(run.session_id, run.flow_run_id)
    embed = speakers and who.speakers != 1
    keys = {c.index: f"{prefix}{c.index:05d}-{(run.workspace / c.key).name}" for c in chunks}
    parts = [PartRun(PartRequest(
        session_id=run.session_id, parent_run_id=run.flow_run_id, part=i, content_id=run.content_id(),
        language=language, vocabulary=vocabulary, speakers=who.speakers, max_speakers=who.max_speakers,
        diarize=embed, chunks=[PartChunk(index=chunks[j].index, key=keys[chunks[j].index], offset=chunks[j].start,
                                         duration=chunks[j].end - chunks[j].start,
                                         speaker=chunks[j].track if len(compact.tracks) > 1 else None)
                               for j in idx]),
        audio_s=round(sum(chunks[j].end - chunks[j].start for j in idx), 3)) for i, idx in enumerate(plan)]
    # the first part is the parent's own (its chunks are on its disk): only the others' go to the bucket
    _upload(run, keys, [chunks[j] for idx in plan[1:] for j in idx])
    log.info("fanning out %d chunks over %d parts, the first kept by this run", len(chunks), len(parts))
    _run_parts(parts, run, {c.index: run.workspace / c.key for c in chunks})
    run.parts = [PartInfo(flow_run_id=str(p.flow_run_id), chunks=[c.index for c in p.request.chunks],
                          audio_s=p.audio_s, wall_s=p.wall_s, attempts=p.attempts) for p in parts]
    transcripts: list[ChunkTranscript] = []
    for p in parts[1:]:  # the parent's own share booked its calls to run.api_usage as it made them
        _account(p.result, run)
    for p in parts:
        run.warnings += [w for w in p.result.warnings if w not in run.warnings]
        transcripts += [ChunkTranscript.model_validate(t) for t in p.result.transcripts]
    transcripts.sort(key=lambda t: t.index)
    if [t.index for t in transcripts] != [c.index for c in chunks]:
        raise TranscriptionFailed("the parts' transcripts do not cover the recording's chunks")
    found = _speakers(parts, run, who) if speakers else None
    return transcripts, found


def _account(result: PartResult | None, run: Run) -> None:
    """A part run attempt's billed calls into the session's usage, once: a finished part's, and a failed
    one's before it is run again or fails the session; not when an earlier attempt of this run booked it."""
    if result is None or not result.usage or (result.attempt is not None and (
            result.attempt in run.accounted or booked(run.storage, run.session_id, result.attempt))):
        return  # nothing billed (no marker to read), or taken already
    run.api_usage += [ServiceUsage.model_validate(u) for u in result.usage]
    if result.attempt is not None:
        run.accounted.add(result.attempt)


def _upload(run: Run, keys: dict[int, str], chunks: list) -> None:
    """The chunks to their keys under the run's prefix of the session's folder in the bucket."""
    def one(c) -> None:
        run.storage.put_bytes(keys[c.index], (run.workspace / c.key).read_bytes(), "application/octet-stream")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, chunks))


def _start(part: PartRun, run: Run, client) -> None:
    """A run of the part (again, after a crash): a linked subflow run. Its idempotency key is the parent
    run, the part and the attempt, so a parent that runs this again finds the run it made, not a new one."""
    from prefect.deployments import run_deployment

    part.attempts += 1
    # a part's Machine is its parent's: the same size and non-secret settings (the run's job variables)
    ctx = FlowRunContext.get()  # the parent's flow run (this runs inside its fan-out task)
    job_variables = getattr(ctx.flow_run, "job_variables", None) if ctx else None
    flow_run = run_deployment(PART_DEPLOYMENT, client=client, timeout=0, as_subflow=True,
                              parameters={"session_id": run.session_id, "part": part.request.model_dump(mode="json")},
                              idempotency_key=f"{run.flow_run_id}:part-{part.request.part}:{part.attempts}",
                              flow_run_name=f"{run.session_id[:8]}-part-{part.request.part}-{part.attempts}",
                              job_variables=job_variables or None)
    part.flow_run_id = flow_run.id


def _run_parts(parts: list[PartRun], run: Run, paths: dict[int, Path]) -> None:
    """Start every part but the first, transcribe the first here meanwhile, and read the others' states
    and finished chunks every VIBEINSIGHT_FANOUT_POLL_S until all are done; anything that ends this
    early (a part failed twice, the parent's own share failed, the parent cancelled) cancels the parts
    still going."""
    from prefect.client.orchestration import get_client

    own, remote = parts[0], parts[1:]
    progress = Progress([(p.audio_s, len(p.request.chunks)) for p in parts])
    own_done: set[int] = set()
    with get_client(sync_client=True) as client:
        try:
            for p in remote:
                _start(p, run, client)
            mine = _in_background(_transcribe_own, own, run, paths, own_done)
            while own.result is None or any(p.result is None for p in remote):
                for p in remote:
                    if p.result is None:
                        _step(p, run, client, progress)
                if own.result is None and mine.done():
                    own.result = mine.result()  # the share's own error, if it failed
                    progress.finish(own.request.part)
                elif own.result is None:
                    progress.update(own.request.part, len(own_done))
                run.reporter.report("transcribe", progress.fraction())
                if own.result is None or any(p.result is None for p in remote):
                    time.sleep(run.settings.fanout.poll_s)
        except BaseException:
            _cancel([p for p in remote if p.result is None], client)
            raise


def _in_background(fn, *args) -> Future:
    """fn(*args) in a daemon thread, in a copy of this context (the chunk task runs need the parent's run
    context); a daemon, so a failed or cancelled parent exits without waiting for its own share."""
    done: Future = Future()
    ctx = contextvars.copy_context()

    def work() -> None:
        try:
            done.set_result(ctx.run(fn, *args))
        except BaseException as exc:  # noqa: BLE001 - handed to the poller, which raises it
            done.set_exception(exc)

    threading.Thread(target=work, name="own-part", daemon=True).start()
    return done


def _transcribe_own(part: PartRun, run: Run, paths: dict[int, Path], done: set[int]) -> PartResult:
    """The parent's own share, as a part run would do it (flows.transcribe_part.transcribe_share); what
    its requests were billed goes straight to the run's usage, as a single run's does."""
    from flows.transcribe_part import transcribe_share

    t0 = time.perf_counter()
    part.flow_run_id, part.attempts = UUID(run.flow_run_id), 1
    durations = {c.index: c.duration for c in part.request.chunks}

    def heard(index: int, seconds: float) -> None:
        if seconds >= durations[index] - 1e-6:
            done.add(index)

    try:
        return transcribe_share(part.request, paths, run.settings, run.storage, run.api_usage, progress=heard,
                                transcriber=run.transcriber)
    finally:
        part.wall_s = round(time.perf_counter() - t0, 3)


def _step(part: PartRun, run: Run, client, progress: Progress) -> None:
    flow_run = client.read_flow_run(part.flow_run_id)
    state = flow_run.state.type.value if flow_run.state else "PENDING"
    step = next_step(state, part.attempts)
    if step == "wait":
        progress.update(part.request.part, _finished_chunks(client, part.flow_run_id))
        return
    if step == "rerun":
        log.warning("part %d run %s ended %s (%s); running it again", part.request.part, part.flow_run_id,
                    state, flow_run.state.message if flow_run.state else "")
        _account(_read_result(part, run), run)  # what the ended attempt paid (none if its Machine died)
        _start(part, run, client)
        return
    result = _read_result(part, run)
    if step == "fail":
        _account(result, run)
        if result is not None and result.error is not None:
            raise PipelineError(f"part {part.request.part} failed {part.attempts} times: {result.error.code}",
                                result.error.code)
        raise TranscriptionFailed(f"part {part.request.part} ended {state} after {part.attempts} runs: "
                                  f"{flow_run.state.message if flow_run.state else ''}")
    if result is None or result.error is not None:
        raise TranscriptionFailed(f"part {part.request.part} completed without its result")
    part.result = result
    part.wall_s = round(flow_run.total_run_time.total_seconds(), 3) if flow_run.total_run_time else None
    progress.finish(part.request.part)


def _finished_chunks(client, flow_run_id: UUID) -> int:
    """The part run's transcribe-chunk task runs that completed (a cache hit counts: its work is done)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    try:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="transcribe-chunk"),
                                          state=TaskRunFilterState(type=TaskRunFilterStateType(
                                              any_=[StateType.COMPLETED]))),
            limit=200)
    except Exception as exc:  # noqa: BLE001 - progress is a nicety; the states decide
        log.debug("task runs of %s not read: %s", flow_run_id, exc)
        return 0
    return len(runs)


def _read_result(part: PartRun, run: Run) -> PartResult | None:
    try:
        return PartResult.model_validate_json(run.storage.get_bytes(part.request.result_key))
    except Exception as exc:  # noqa: BLE001 - a part that died before writing it
        log.warning("result of part %d not read: %s", part.request.part, exc)
        return None


def _cancel(parts: list[PartRun], client) -> None:
    """Cancel the parts still going (the Fly worker then deletes their Machines); best effort: Prefect's
    server cancels a cancelled parent's subflow runs too."""
    from prefect.states import Cancelling

    for p in parts:
        if p.flow_run_id is None:
            continue
        try:
            state = client.read_flow_run(p.flow_run_id).state
            if state is not None and state.is_final():  # a part that failed keeps its own end
                continue
            client.set_flow_run_state(p.flow_run_id, Cancelling(message="the session's run ended"), force=True)
        except Exception as exc:  # noqa: BLE001
            log.warning("part %d run %s not cancelled: %s", p.request.part, p.flow_run_id, exc)


def _speakers(parts: list[PartRun], run: Run, who: SpeakerRequest) -> Diarization | None:
    """One clustering over every part's speaker windows, so a speaker keeps one label across parts. In auto
    mode a part without windows leaves the transcript without speakers; with VIBEINSIGHT_DIARIZE=on it fails."""
    cfg = run.settings.diarize
    if who.speakers == 1:
        return Diarization.one_speaker(max((c.offset + c.duration for p in parts for c in p.request.chunks),
                                           default=0.0))
    t0 = time.perf_counter()
    try:
        if any(p.result.windows is None for p in parts):
            raise TranscriptionFailed("a part has no speaker windows", "diarization_failed")
        d = Diarizer(num_speakers=who.speakers, max_speakers=who.max_speakers or cfg.max_speakers,
                     threshold=cfg.threshold)
        for p in parts:
            w = p.result.windows
            d.extend(w.spans, w.centres, w.array())
        return d.finish()
    except Exception as exc:
        if cfg.mode == "on":
            raise TranscriptionFailed(f"diarization failed: {exc}", "diarization_failed") from exc
        log.warning("diarization skipped: %s", exc)
        if "diarization_failed" not in run.warnings:
            run.warnings.append("diarization_failed")
        return None
    finally:
        run.timings["diarize"] = round(time.perf_counter() - t0, 3)
