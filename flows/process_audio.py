"""process-audio: ingest → transcode → transcribe → analyze → publish.

Orchestration only: the work lives in the blocks and in the vibeinsight package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, timezone

from opentelemetry import trace
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel, Field, ValidationError

from blocks import registry
from blocks.transcriber import ChunkJob, ChunkTranscript
from flows import fan_out, status_hooks
from flows.chunks import CHUNK_TIMEOUT_S, _transient, count_unbooked, mark_booked, run_chunks
from flows.status_hooks import HOOKS, StageReporter, run_attempt
from vibeinsight import logs, paid, tracing
from vibeinsight.audio import probe as probing
from vibeinsight.audio import transcode as tc
from vibeinsight.cores import usable_cores
from vibeinsight.diarization import Diarization, Diarizer, assign_speakers
from vibeinsight.errors import (
    InputRejected,
    PipelineError,
    SessionConflict,
    TranscriptionFailed,
    detail_of,
    error_code,
    user_message,
)
from vibeinsight.params import (
    MAX_TERM_CHARS,
    MAX_VOCABULARY,
    check_ids,
    check_s3_source,
    row_ids,
    valid_terms,
    workspace_for,
)
from vibeinsight.quota import compact_settings, current_month, guard_decision, month_bounds, user_share_exceeded
from vibeinsight.schemas import (
    ChunkInfo,
    DiarizationInfo,
    ErrorInfo,
    PartInfo,
    ResultDocument,
    Segment,
    SourceInfo,
    Status,
    TranscodeInfo,
    Transcript,
)
from vibeinsight.scoring import weighted_confidence
from vibeinsight.settings import FlowSettings, Settings, get_settings
from vibeinsight.status_rule import conflict_with, result_key
from vibeinsight.usage import ServiceUsage, Usage, build_usage, events_from_document, load_table, provider_of

log = logging.getLogger("vibeinsight.flow")
# A deployment's flow run imports this module in its own process before Prefect opens the run's
# span: the one moment to install the tracer provider there (a no-op unless ENABLE_TRACING).
tracing.setup()


RETRY = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_transient, cache_policy=NO_CACHE)
# Every task has a timeout (seconds), a backstop behind the ffmpeg, storage and API timeouts inside
# them: a 2 GiB download, a 4-hour transcode or an API's retries fit well within these.
TIMEOUT_S = {"ingest": 1800, "transcode": 1800, "transcribe-chunk": CHUNK_TIMEOUT_S, "analyze": 1800, "publish": 300}


class Run:
    """What the tasks of one run share: settings, blocks, workspace, stage reporter, timings."""

    def __init__(self, session_id: str, user_id: str | None, flow_run_id: str, settings: Settings,
                 attempt: int | None = None):
        self.settings = settings
        self.session_id = session_id
        self.user_id = user_id
        self.flow_run_id, self.attempt = flow_run_id, attempt
        # the flow run's own folder (resolved, never outside work_dir): two runs of a session never share one
        self.workspace = workspace_for(settings.work_dir, flow_run_id)
        self.storage = registry.storage(settings)
        self.transcriber = registry.transcriber(settings)
        self.analyzer = registry.analyzer(settings)
        self.reporter = StageReporter(session_id, flow_run_id, user_id, attempt)
        self.may_publish = False  # until the session's row says this run may write its result
        self.timings: dict[str, float] = {}
        self.served_by = "local"  # which storage served the upload: local, primary or fallback
        self.api_usage: list[ServiceUsage] = []  # one entry per billed chunk or analysis
        # the attempts whose billed calls api_usage holds: this one, and part runs' (vibeinsight.paid)
        self.accounted: set[str] = {paid.attempt_tag(flow_run_id)}
        self.source_sha256 = ""
        self.warnings: list[str] = []
        self.parts: list[PartInfo] | None = None  # the part runs, when the transcription fanned out

    def content_id(self) -> str:
        """The audio the chunks come from: the upload's hash and how it was transcoded."""
        cfg = self.settings.transcode.model_dump(mode="json")
        return hashlib.sha256(json.dumps([self.source_sha256, cfg, self.transcriber.chunk_limit_s()],
                                         sort_keys=True).encode()).hexdigest()

    @contextmanager
    def stage(self, name: str):
        """Time a stage, report its progress, tag its log lines and give it a span."""
        self.reporter.report(name, 0.0)
        t0 = time.perf_counter()
        try:
            with logs.bind(stage=name), tracing.span(f"stage.{name}", self.session_id, stage=name):
                yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        self.reporter.report(name, 1.0)


def quota_guard(run: Run) -> Settings:
    """This month's ledger against the plans and the budget: the settings the run should use, or
    InputRejected when a hard provider limit or the budget would be crossed (vibeinsight.quota.guard_decision)."""
    settings = run.settings
    q = settings.quota
    if not (q.guard or q.enforce):
        return settings
    try:
        now = datetime.now(timezone.utc)
        start, end, _ = month_bounds(current_month(now))
        ledger, limits = registry.usage_ledger(settings), registry.plans(settings).limits(q.plan)
        decision = guard_decision(ledger.daily_totals(start, end), limits, now, guard=q.guard, enforce=q.enforce,
                                  limit_pct=q.limit_pct, warn_pct=q.warn_pct, budget_usd=q.budget_usd)
        user_refusal = (user_share_exceeded(ledger.user_egress(start, end, run.user_id), limits, q.user_share_pct)
                        if q.enforce and run.user_id else None)
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger must not stop the pipeline
        log.warning("quota guard skipped: %s", exc)
        return settings
    if decision.mode == "refuse":
        raise InputRejected(f"{decision.reason}; new sessions are refused until the plan allows more "
                            "(VIBEINSIGHT_QUOTA_ENFORCE=false to run anyway)", "quota_exceeded")
    if user_refusal:
        raise InputRejected(f"{user_refusal}; your new sessions are refused until next month", "quota_exceeded")
    if decision.mode != "compact":
        return settings
    log.warning("quota guard: %s; compact transcode, results and slower status updates", decision.reason)
    guarded = compact_settings(settings)
    status_hooks.slow_down(run.session_id, guarded.status.min_interval_s)  # the hooks' writer exists already
    return guarded


def record_usage(document: ResultDocument, settings: Settings | None = None) -> int:
    """The run's usage_events rows, each booked to the provider that bills it; never fails the run
    (the ledger is bookkeeping)."""
    try:
        settings = settings or get_settings()
        events = events_from_document(document, status_writes=status_hooks.write_stats(document.session_id),
                                      status_provider=registry.status_provider(settings),
                                      subscribers=settings.quota.subscribers_per_session,
                                      fly_region=settings.fly_region, table=load_table(settings.price_table))
        return registry.usage_ledger(settings).record(events)
    except Exception as exc:  # noqa: BLE001
        log.warning("usage not recorded: %s", exc)
        return 0


def check_session(run: Run) -> None:
    """SessionConflict unless this run may write the session's row and result: the row does not exist
    yet, or names this run's user and (where request_run() manages it) this run as its current one."""
    store = registry.status_store(run.settings)
    try:  # a store outage is ridden out (VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S); past it the run fails, writing nothing
        row = store.ride_out(lambda: store.writer(run.session_id), "reading the session's owner")
    except Exception as exc:
        raise PipelineError(f"cannot read the session's row to check its owner: {exc}", "internal") from exc
    if reason := conflict_with(row, run.user_id, run.attempt, run.flow_run_id):
        raise SessionConflict(f"session {run.session_id}: {reason}; its row and result are left as they are")


@task(name="ingest", timeout_seconds=TIMEOUT_S["ingest"], **RETRY)
def ingest(source: str, run: Run) -> SourceInfo:
    with run.stage("ingest"):
        fetched = run.storage.fetch(source, run.workspace, max_bytes=run.settings.limits.max_bytes)
        run.served_by = fetched.served_by
        run.source_sha256 = fetched.sha256
        probing.check_size(fetched.bytes, run.settings.limits)  # again: the bytes read are the truth
        info = probing.ffprobe(fetched.path, run.settings.limits.probe_timeout_s)
        probing.check_duration(info.duration_s, run.settings.limits)
        return SourceInfo(uri=source, bytes=fetched.bytes, sha256=fetched.sha256, container=info.container,
                          codec=info.codec, duration_s=info.duration_s or 0.0, channels=info.channels,
                          sample_rate=info.sample_rate)


@task(name="transcode", timeout_seconds=TIMEOUT_S["transcode"], **RETRY)
def transcode(source: SourceInfo, run: Run) -> TranscodeInfo:
    cfg = run.settings.transcode
    if (limit := run.transcriber.chunk_limit_s()) and limit < cfg.max_chunk_s:  # API: shorter chunks, in parallel
        cfg = cfg.model_copy(update={"max_chunk_s": limit})
    if not run.transcriber.api_service():  # nothing crosses the network: PCM, no encoding to wait for
        cfg = cfg.model_copy(update={"codec": "pcm"})
    with run.stage("transcode"):
        upload = next(run.workspace.glob("upload*"))
        limits = run.settings.limits
        out = tc.transcode(upload, run.workspace / "compact", source.channels, source.duration_s or None, cfg,
                           on_progress=lambda f: run.reporter.report("transcode", f * 0.9),
                           demuxer=source.container, max_duration_s=limits.max_duration_s,
                           timeout_s=limits.ffmpeg_timeout_s, margin_s=limits.duration_margin_s)
        probing.check_duration(out.duration_s, run.settings.limits)  # the decoded length is the truth
        source.duration_s = source.duration_s or out.duration_s
        tracks = tc.choose_tracks(out, cfg)
        spans = tc.chunk_spans(out, cfg, max(1, run.transcriber.balanced_chunks() // len(tracks)))
        chunks: list[ChunkInfo] = []
        for track in tracks:
            for (start, end), path in zip(spans, tc.split_track(track, spans, run.workspace / "compact",
                                                                             limits.ffmpeg_timeout_s), strict=True):
                chunks.append(ChunkInfo(index=len(chunks), track=track.name, start=round(start, 3),
                                        end=round(end, 3), bytes=path.stat().st_size,
                                        key=str(path.relative_to(run.workspace))))
        return TranscodeInfo(codec=cfg.codec, bitrate_kbps=cfg.kbps, sample_rate=cfg.sample_rate,
                             bytes=sum(t.bytes for t in tracks), tracks=[t.name for t in tracks], chunks=chunks,
                             speech_s=round(out.speech_s, 3))


class SpeakerRequest(BaseModel):
    """What the caller said about the speakers: an exact count, an upper bound, or neither."""

    speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)


def transcribe(compact: TranscodeInfo, language: str, run: Run, vocabulary: list[str] | None = None,
               who: SpeakerRequest | None = None) -> tuple[Transcript, list[ChunkTranscript]]:
    who = who or SpeakerRequest()
    with run.stage("transcribe"):
        lang = run.transcriber.check_language(language)
        by_channel = len(compact.tracks) > 1
        speakers = not by_channel and run.settings.diarize.mode != "off"
        if fan_out.pays(compact, run):  # a long recording on the pool: parts in their own Machines
            results, found = fan_out.transcribe_parts(compact, language, run, vocabulary, who, speakers)
        else:
            results, found = _transcribe_here(compact, lang, run, vocabulary, who, speakers)
        # chunks from the cache paid by an attempt that booked nothing: a part run or an earlier attempt of
        # this run whose Machine died before handing its usage on (vibeinsight.paid)
        count_unbooked(results, run.accounted, run.storage, run.session_id, run.api_usage)
        transcript = merge_chunks(results, run.transcriber.model_name, lang)
        transcript.vocabulary = vocabulary or None
        if by_channel:
            transcript.diarization = DiarizationInfo(method="channels", speakers=len(compact.tracks))
        elif found:
            transcript.segments = assign_speakers(transcript.segments, found)
            transcript.diarization = DiarizationInfo(method="embeddings", speakers=found.speakers,
                                                     requested_speakers=who.speakers,
                                                     max_speakers=who.max_speakers or run.settings.diarize.max_speakers)
        return transcript, results


def _transcribe_here(compact: TranscodeInfo, lang: str | None, run: Run, vocabulary: list[str] | None,
                     who: SpeakerRequest, speakers: bool) -> tuple[list[ChunkTranscript], Diarization | None]:
    """Every chunk in this run's own process."""
    # A mono mix is diarized first: with auto language the turns shape the decoding windows.
    found = diarize_in_time(compact, run, who) if speakers else None
    by_channel = len(compact.tracks) > 1
    jobs = [ChunkJob(index=c.index, path=run.workspace / c.key, offset=c.start, duration=c.end - c.start,
                     speaker=c.track if by_channel else None, vocabulary=vocabulary or None,
                     turns=found.turns_between(c.start, c.end) if found and lang is None else None)
            for c in compact.chunks]
    total = sum(j.duration for j in jobs) or 1.0
    done = {j.index: 0.0 for j in jobs}

    def progress(index: int, seconds: float) -> None:
        done[index] = seconds
        run.reporter.report("transcribe", sum(done.values()) / total)

    results = run_chunks(jobs, lang, run.transcriber, run.storage, progress, run.api_usage.append,
                         session_id=run.session_id, content_id=run.content_id(),
                         api_limit=run.settings.api_concurrency_limit)
    return results, found


@task(name="diarize", cache_policy=NO_CACHE)  # its timeout is a setting: with_options at the call
def diarize(compact: TranscodeInfo, run: Run, who: SpeakerRequest) -> Diarization:
    """Speaker turns of a mono mix, chunk by chunk (only embeddings are kept: memory stays flat)."""
    cfg = run.settings.diarize
    if who.speakers == 1:
        return Diarization.one_speaker(max((c.end for c in compact.chunks), default=0.0))
    d = Diarizer(num_speakers=who.speakers, max_speakers=who.max_speakers or cfg.max_speakers,
                 threshold=cfg.threshold, threads=cfg.threads or usable_cores())
    for c in compact.chunks:
        d.add_file(run.workspace / c.key, c.start)
    return d.finish()


def diarize_in_time(compact: TranscodeInfo, run: Run, who: SpeakerRequest) -> Diarization | None:
    """The diarize task within VIBEINSIGHT_DIARIZE_TIMEOUT_S. In auto mode a failure (a timeout too) is
    a warning and the transcript goes without speakers; with VIBEINSIGHT_DIARIZE=on it fails the run."""
    t0 = time.perf_counter()
    cfg = run.settings.diarize
    try:
        return diarize.with_options(timeout_seconds=cfg.timeout_s)(compact, run, who)
    except Exception as exc:
        if cfg.mode == "on":
            raise TranscriptionFailed(f"diarization failed: {exc}", "diarization_failed") from exc
        log.warning("diarization skipped: %s", exc)
        run.warnings.append("diarization_failed")
        return None
    finally:
        run.timings["diarize"] = round(time.perf_counter() - t0, 3)


def merge_chunks(results: list[ChunkTranscript], model: str, requested: str | None = None) -> Transcript:
    segments = sorted((s for r in results for s in r.segments), key=lambda s: (s.start, s.speaker or ""))
    shares = language_shares(segments, results)
    # Detection on silence means nothing: then say what was asked, or "und" (undetermined).
    language = max(shares, key=shares.get) if shares else (requested or "und")
    prob = next((r.language_probability for r in results if r.language == language), None)
    return Transcript(language=language, language_probability=prob, model=model,
                      text=join_text(segments, language),
                      confidence=weighted_confidence((s.confidence, s.end - s.start) for s in segments),
                      segments=segments, languages=shares or None)


def language_shares(segments: list[Segment], results: list[ChunkTranscript]) -> dict[str, float]:
    """Share of the speech per language: by word time where words exist, else by segment (or chunk) time."""
    seconds: dict[str, float] = {}
    for s in segments:
        lang = s.language or next((r.language for r in results if s in r.segments), None)
        if lang:
            spoken = sum(w.end - w.start for w in s.words) if s.words else s.end - s.start
            seconds[lang] = seconds.get(lang, 0.0) + max(spoken, 1e-3)
    total = sum(seconds.values())
    return {k: round(v / total, 4) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])} if total else {}


def join_text(segments: list[Segment], language: str) -> str:
    """Japanese and Chinese join without spaces; a segment in another language keeps its space."""
    out = ""
    for s in segments:
        tight = (s.language or language) in {"ja", "zh"} and (not out or _is_cjk_end(out))
        out += s.text if not out or tight else " " + s.text
    return out


def _is_cjk_end(text: str) -> bool:
    return bool(text) and ord(text[-1]) > 0x2E80


@task(name="analyze", timeout_seconds=TIMEOUT_S["analyze"], **RETRY)
def analyze(transcript: Transcript, source: SourceInfo, run: Run) -> dict:
    with run.stage("analyze"):
        try:
            result, usage = run.analyzer.analyze_metered(transcript, source.duration_s)
        except Exception as exc:  # noqa: BLE001 - the model failed after its retries (or never validated)
            # The transcript is paid for and the local metrics stand on their own: the session
            # completes with them and the error code; what the model was billed is still counted.
            usage = getattr(exc, "usage", None)
            result = run.analyzer.local_metrics(transcript, source.duration_s)
            code = error_code(exc)
            operator_detail(exc, "analyze", code)
            result["error"] = ErrorInfo(code=code, message=user_message(code, transcript.language),
                                        stage="analyze").model_dump()
        if usage:
            run.api_usage.append(usage)
        return result


def _result_json(document: ResultDocument, compact: bool) -> bytes:
    # Compact (the quota guard): no indentation, a third fewer bytes for clients to download.
    layout = {"separators": (",", ":")} if compact else {"indent": 2}
    return json.dumps(document.model_dump(mode="json"), ensure_ascii=False, **layout).encode()


@task(name="publish", timeout_seconds=TIMEOUT_S["publish"], **RETRY)
def publish(document: ResultDocument, run: Run) -> ResultDocument:
    with run.stage("publish"):
        document.timings = dict(run.timings)
        compact = run.settings.quota.compact_results
        # bytes_out counts the document itself, which holds that figure: measured until it stands still
        for _ in range(3):
            data = _result_json(document, compact)
            if document.usage.bytes_out == len(data):
                break
            document.usage.bytes_out = len(data)
        data, key = _result_json(document, compact), result_key(document.session_id)
        with tracing.span("storage.put", key=key, bytes=len(data), storage=type(run.storage).__name__):
            run.storage.put_bytes(key, data, "application/json")
        if getattr(run.storage, "fell_back", False):  # the result went to the fallback (Supabase Storage)
            document.usage.storage = "fallback"
            document.usage.upload_provider = provider_of(run.storage.service_name("fallback"))
        return document


# The whole run within VIBEINSIGHT_FLOW_TIMEOUT_S (read when a run's process imports this module).
@flow(name="process-audio", log_prints=False, timeout_seconds=FlowSettings().timeout_s, **HOOKS)
def process_audio(source: str, session_id: str | None = None, user_id: str | None = None,
                  language: str = "auto", vocabulary: list[str] | None = None, speakers: int | None = None,
                  max_speakers: int | None = None) -> dict:
    """Take one recording from upload to insight; returns the result document.

    vocabulary: names and jargon to expect ("ComfyUI", "Tigris"); speakers / max_speakers: the
    number of speakers on a mono recording, exactly or at most (None: found by clustering)."""
    flow_run_id = str(get_run_context().flow_run.id)
    # The parameters may come from anyone with the Prefect API: checked here, before anything is
    # touched. A session_id that is not a UUID keys nothing (the run's own id does, as in the hooks).
    sid, uid = row_ids({"session_id": session_id, "user_id": user_id}, flow_run_id)
    attempt = run_attempt(get_run_context().flow_run, sid)
    with logs.bind(session_id=sid, flow_run_id=flow_run_id):
        return _process(source, session_id, user_id, sid, uid, flow_run_id, attempt, language,
                        dict(vocabulary=vocabulary, speakers=speakers, max_speakers=max_speakers))


def _process(source: str, session_id: str | None, user_id: str | None, sid: str, uid: str | None, flow_run_id: str,
             attempt: int | None, language: str, engine: dict) -> dict:
    """The run's body: `session_id`/`user_id` as given (checked first), `sid`/`uid` the ids that key its rows."""
    run = Run(sid, uid, flow_run_id, get_settings(), attempt)
    doc = ResultDocument(session_id=sid, user_id=uid, flow_run_id=flow_run_id, status=Status.RUNNING)
    try:
        check_ids(session_id, user_id)
        check_session(run)  # before anything reaches the bucket: not this run's session, nothing is written
        run.may_publish = True
        vocabulary, who = engine_request(**engine)  # bad values fail before any work
        if run.storage.role() != "local":  # object storage: only this user's uploads in our bucket
            check_s3_source(source, run.settings.s3.bucket_name, run.settings.s3.upload_prefixes, uid)
        run.settings = quota_guard(run)  # quota: refuse, or go compact
        doc.source = ingest(source, run)
        doc.transcode = transcode(doc.source, run)
        doc.transcript, chunk_results = transcribe(doc.transcode, language, run, vocabulary, who)
        doc.parts = run.parts
        doc.analysis = analyze(doc.transcript, doc.source, run)
        doc.usage = usage_of(doc, run)
        doc.warnings += run.warnings
        if not doc.transcript.segments:
            doc.warnings.append("no_speech")
        if doc.analysis.get("error"):  # the language model failed: the metrics stand, the session completes
            doc.warnings.append("analysis_degraded")
            log.warning("analysis degraded to local metrics: %s", doc.analysis["error"]["code"],
                        extra={"error_code": doc.analysis["error"]["code"]})
        doc.status = Status.COMPLETED
        check_session(run)  # again: a run that is no longer the session's current one keeps its hands off
        return publish(doc, run).model_dump(mode="json")
    except BaseException as exc:
        doc.status = Status.FAILED
        code = error_code(exc)
        doc.error = ErrorInfo(code=code, message=user_message(code, language),
                              stage=next(reversed(run.timings), None) if run.timings else "ingest")
        operator_detail(exc, doc.error.stage, code, failed=True)
        _publish_failure(doc, run)
        raise
    finally:
        # usage_events rows for the quota ledger (never raises), then the attempts they booked
        if record_usage(doc, run.settings) and run.api_usage:
            mark_booked(run.accounted, run.storage, run.session_id)
        shutil.rmtree(run.workspace, ignore_errors=True)  # only our copies; the upload is untouched


def engine_request(vocabulary: list[str] | None, speakers: int | None,
                   max_speakers: int | None) -> tuple[list[str] | None, SpeakerRequest]:
    """The transcription parameters, checked: a bad value is a rejected input, not a crash."""
    if vocabulary is not None:
        if not isinstance(vocabulary, list) or len(vocabulary) > MAX_VOCABULARY or not valid_terms(vocabulary):
            raise InputRejected(f"vocabulary must be a list of at most {MAX_VOCABULARY} terms of 1-{MAX_TERM_CHARS} "
                                "characters",
                                "invalid_parameter")
        vocabulary = list(dict.fromkeys(w.strip() for w in vocabulary)) or None
    try:
        who = SpeakerRequest(speakers=speakers, max_speakers=max_speakers)
    except ValidationError as exc:
        raise InputRejected(f"speakers and max_speakers must be whole numbers of at least 1: {exc.errors()[0]['msg']}",
                            "invalid_parameter") from exc
    if who.speakers and who.max_speakers and who.speakers > who.max_speakers:
        raise InputRejected(f"speakers={who.speakers} is more than max_speakers={who.max_speakers}", "invalid_parameter")
    return vocabulary, who


def usage_of(doc: ResultDocument, run: Run) -> Usage:
    """What the run moved and spent so far (a failed run still records the calls it paid for)."""
    return build_usage(bytes_in=doc.source.bytes if isinstance(doc.source, SourceInfo) else 0,
                       bytes_transcoded=doc.transcode.bytes if doc.transcode else 0, bytes_out=0,
                       audio_seconds=doc.source.duration_s if isinstance(doc.source, SourceInfo) else 0.0,
                       services=run.api_usage, storage=run.served_by,
                       storage_service=run.storage.service_name(run.served_by),
                       table=load_table(run.settings.price_table))


def operator_detail(exc: BaseException, stage: str | None, code: str, failed: bool = False) -> None:
    """What exactly went wrong, for operators only: the run's log line (redacted as every log line is)
    and its span. The result document and the status row carry the code and its fixed sentence."""
    detail = detail_of(exc)
    what = "failed" if failed else "degraded"
    log.warning("session %s at %s: %s: %s", what, stage, code, detail, extra={"error_code": code})
    tracing.set_attributes(trace.get_current_span(), error_code=code, error_detail=logs.redact(detail or ""))


def _publish_failure(doc: ResultDocument, run: Run) -> None:
    if not run.may_publish or (doc.error and doc.error.code == "session_conflict"):
        return  # not this run's session (or not known to be): its result stays as it was
    doc.timings = dict(run.timings)
    doc.usage = usage_of(doc, run)
    try:
        run.storage.put_json(result_key(doc.session_id), doc.model_dump(mode="json"))
    except Exception:  # noqa: BLE001
        pass  # the FAILED row still carries the code; the run's own error matters more
