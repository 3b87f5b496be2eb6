"""process-audio: ingest → transcode → transcribe → analyze → publish.

Orchestration only: the work lives in the blocks and in the vibeinsight package.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import registry
from blocks.transcriber import ChunkJob, ChunkTranscript, Transcriber
from flows.status import HOOKS, StageReporter, result_key
from vibeinsight.audio import probe as probing
from vibeinsight.audio import transcode as tc
from vibeinsight.errors import PipelineError, TranscriptionFailed, error_code
from vibeinsight.schemas import (
    ChunkInfo, ErrorInfo, ResultDocument, SourceInfo, Status, TranscodeInfo, Transcript, Usage,
)
from vibeinsight.scoring import weighted_confidence
from vibeinsight.settings import Settings, get_settings


def _transient(task, task_run, state) -> bool:
    """Retry what may pass (I/O, a busy machine), never a rejected or broken input."""
    try:
        state.result()
    except PipelineError as exc:
        return exc.code in {"storage_failed", "transcription_failed", "internal"}
    except Exception:
        return True
    return False


RETRY = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)


class Run:
    """What the tasks of one run share: settings, blocks, workspace, stage reporter, timings."""

    def __init__(self, session_id: str, user_id: str | None, flow_run_id: str | None, settings: Settings):
        self.settings = settings
        self.session_id = session_id
        self.workspace = settings.work_dir / session_id
        self.storage = registry.storage(settings)
        self.transcriber = registry.transcriber(settings)
        self.analyzer = registry.analyzer(settings)
        self.reporter = StageReporter(session_id, flow_run_id, user_id)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        self.reporter.report(name, 0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        self.reporter.report(name, 1.0)


@task(name="ingest", **RETRY)
def ingest(source: str, run: Run) -> SourceInfo:
    with run.stage("ingest"):
        fetched = run.storage.fetch(source, run.workspace)
        probing.check_size(fetched.bytes, run.settings.limits)
        info = probing.ffprobe(fetched.path)
        probing.check_duration(info.duration_s, run.settings.limits)
        return SourceInfo(uri=source, bytes=fetched.bytes, sha256=fetched.sha256, container=info.container,
                          codec=info.codec, duration_s=info.duration_s or 0.0, channels=info.channels,
                          sample_rate=info.sample_rate)


@task(name="transcode", **RETRY)
def transcode(source: SourceInfo, run: Run) -> TranscodeInfo:
    cfg = run.settings.transcode
    with run.stage("transcode"):
        upload = next(run.workspace.glob("upload*"))
        out = tc.transcode(upload, run.workspace / "compact", source.channels, source.duration_s or None, cfg,
                           on_progress=lambda f: run.reporter.report("transcode", f * 0.9))
        probing.check_duration(out.duration_s, run.settings.limits)  # the decoded length is the truth
        source.duration_s = source.duration_s or out.duration_s
        tracks = tc.choose_tracks(out, cfg)
        spans = tc.chunk_spans(out, cfg)
        chunks: list[ChunkInfo] = []
        for track in tracks:
            for (start, end), path in zip(spans, tc.split_track(track, spans, run.workspace / "compact")):
                chunks.append(ChunkInfo(index=len(chunks), track=track.name, start=round(start, 3),
                                        end=round(end, 3), bytes=path.stat().st_size,
                                        key=str(path.relative_to(run.workspace))))
        return TranscodeInfo(codec="opus", bitrate_kbps=cfg.bitrate_kbps, sample_rate=cfg.sample_rate,
                             bytes=sum(t.bytes for t in tracks), tracks=[t.name for t in tracks], chunks=chunks,
                             speech_s=round(out.speech_s, 3))


@task(name="transcribe-chunk", **RETRY)
def transcribe_chunk(job: ChunkJob, language: str | None, transcriber: Transcriber, progress) -> ChunkTranscript:
    try:
        return transcriber.transcribe(job, language, on_progress=lambda s: progress(job.index, s))
    except PipelineError:
        raise
    except Exception as exc:
        raise TranscriptionFailed(f"chunk {job.index}: {exc}") from exc


def transcribe(compact: TranscodeInfo, language: str, run: Run) -> tuple[Transcript, list[ChunkTranscript]]:
    with run.stage("transcribe"):
        lang = run.transcriber.check_language(language)
        speakers = len(compact.tracks) > 1
        jobs = [ChunkJob(index=c.index, path=run.workspace / c.key, offset=c.start, duration=c.end - c.start,
                         speaker=c.track if speakers else None) for c in compact.chunks]
        total = sum(j.duration for j in jobs) or 1.0
        done = {j.index: 0.0 for j in jobs}

        def progress(index: int, seconds: float) -> None:
            done[index] = seconds
            run.reporter.report("transcribe", sum(done.values()) / total)

        results = transcribe_chunk.map(jobs, unmapped(lang), unmapped(run.transcriber), unmapped(progress)).result()
        return merge_chunks(results, run.transcriber.model_name, lang), results


def merge_chunks(results: list[ChunkTranscript], model: str, requested: str | None = None) -> Transcript:
    segments = sorted((s for r in results for s in r.segments), key=lambda s: (s.start, s.speaker or ""))
    by_lang: dict[str, float] = {}
    for r in results:  # the language most of the speech was detected as
        if r.segments:
            by_lang[r.language] = by_lang.get(r.language, 0.0) + r.audio_s
    # Detection on silence means nothing: then say what was asked, or "und" (undetermined).
    language = max(by_lang, key=by_lang.get) if by_lang else (requested or "und")
    prob = next((r.language_probability for r in results if r.language == language), None)
    joiner = "" if language in {"ja", "zh"} else " "
    return Transcript(language=language, language_probability=prob, model=model,
                      text=joiner.join(s.text for s in segments),
                      confidence=weighted_confidence((s.confidence, s.end - s.start) for s in segments),
                      segments=segments)


@task(name="analyze", **RETRY)
def analyze(transcript: Transcript, source: SourceInfo, run: Run) -> dict:
    with run.stage("analyze"):
        return run.analyzer.analyze(transcript, source.duration_s)


@task(name="publish", **RETRY)
def publish(document: ResultDocument, run: Run) -> ResultDocument:
    with run.stage("publish"):
        document.timings = dict(run.timings)
        run.storage.put_json(result_key(document.session_id), document.model_dump(mode="json"))
        return document


@flow(name="process-audio", task_runner=ThreadPoolTaskRunner(max_workers=get_settings().whisper.concurrency),
      log_prints=False, **HOOKS)
def process_audio(source: str, session_id: str | None = None, user_id: str | None = None,
                  language: str = "auto") -> dict:
    """Take one recording from upload to insight; returns the result document."""
    flow_run_id = str(get_run_context().flow_run.id)
    session_id = session_id or flow_run_id  # the hooks fall back to the same id
    run = Run(session_id, user_id, flow_run_id, get_settings())
    doc = ResultDocument(session_id=session_id, user_id=user_id, flow_run_id=flow_run_id, status=Status.RUNNING)
    try:
        doc.source = ingest(source, run)
        doc.transcode = transcode(doc.source, run)
        doc.transcript, chunk_results = transcribe(doc.transcode, language, run)
        doc.analysis = analyze(doc.transcript, doc.source, run)
        doc.usage = Usage(bytes_in=doc.source.bytes, bytes_transcoded=doc.transcode.bytes,
                          audio_seconds=round(doc.source.duration_s, 3),
                          api_calls={}, cost_usd=0.0)
        if not doc.transcript.segments:
            doc.warnings.append("no_speech")
        doc.status = Status.COMPLETED
        return publish(doc, run).model_dump(mode="json")
    except BaseException as exc:
        doc.status = Status.FAILED
        doc.error = ErrorInfo(code=error_code(exc), message=getattr(exc, "message", None) or str(exc),
                              stage=next(reversed(run.timings), None) if run.timings else "ingest")
        _publish_failure(doc, run)
        raise
    finally:
        shutil.rmtree(run.workspace, ignore_errors=True)  # only our copies; the upload is untouched


def _publish_failure(doc: ResultDocument, run: Run) -> None:
    doc.timings = dict(run.timings)
    try:
        run.storage.put_json(result_key(doc.session_id), doc.model_dump(mode="json"))
    except Exception:
        pass  # the FAILED row still carries the code; the run's own error matters more
