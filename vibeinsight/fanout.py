"""Fan-out of one recording's transcription over part runs (issue 21): when it pays, how the chunks
are grouped into parts, what a part is asked (checked where it enters) and what it hands back.

Plain logic: the flows (flows/process_audio.py, flows/transcribe_part.py) do the I/O.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from vibeinsight.params import MAX_TERM_CHARS, MAX_VOCABULARY, canonical_uuid, valid_terms

PART_FLOW = "transcribe-part"
PART_DEPLOYMENT = f"{PART_FLOW}/api"
# Under the runs' workspace prefix (blocks.storage.WORKSPACE_PREFIX): the run key may write there, and
# the bucket's lifecycle removes what a run leaves behind here after a day (blocks.storage.PART_CHUNKS_DAYS).
FANOUT_PREFIX = "prefect-results/fanout/"
_KEY_PART = re.compile(r"^[A-Za-z0-9._-]+$")


def session_prefix(session_id: str) -> str:
    """Where a session's part chunks and part results live in the bucket."""
    return f"{FANOUT_PREFIX}{session_id}/"


def run_prefix(session_id: str, parent_run_id: str) -> str:
    """One parent run's folder inside its session's prefix: two runs of a session never share files."""
    return f"{session_prefix(session_id)}{parent_run_id}/"


def part_result_key(session_id: str, parent_run_id: str, part: int) -> str:
    return f"{run_prefix(session_id, parent_run_id)}part-{part}.json"


def should_fan_out(mode: str, speech_s: float, min_s: float, *, deployed: bool, remote_storage: bool) -> bool:
    """Fan out only when asked (auto), the speech is long enough to pay for Machine starts, the run is a
    deployment's (so its parts can be too) and the chunks can travel through the bucket."""
    return mode == "auto" and deployed and remote_storage and speech_s >= min_s


def plan_parts(spans: list[tuple[float, float]], part_s: float, max_parts: int, lead_s: float = 0.0) -> list[list[int]]:
    """Positions of `spans` (each chunk's (start, end), in chunk order) grouped into consecutive parts.

    A part closes at the chunk boundary nearest to its share of the audio: about `part_s` seconds each,
    widened so that there are at most `max_parts`; never an empty part, never a chunk split. The first
    part (the one the parent keeps) is `lead_s` longer than the others' share, at most half the audio:
    the parent starts on it at once, while every other part first waits for its Machine and Prefect."""
    if not spans:
        return []
    lengths = [max(0.0, e - s) for s, e in spans]
    total = sum(lengths)
    count = max(1, min(max_parts, len(spans), round(total / part_s) if part_s > 0 else 1))
    lead = min(max(0.0, lead_s), total / 2) if count > 1 else 0.0
    target = (total - lead) / count
    parts: list[list[int]] = [[]]
    done = 0.0
    for i, length in enumerate(lengths):
        # close the current part when the boundary before this chunk is nearer its target than the one after
        goal = target * len(parts) + lead
        if parts[-1] and len(parts) < count and abs(done - goal) <= abs(done + length - goal):
            parts.append([])
        parts[-1].append(i)
        done += length
    return parts


def _finite(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


class PartChunk(BaseModel):
    """One chunk of a part: its place in the recording and its copy in the bucket."""

    index: int = Field(ge=0)
    key: str = Field(min_length=1, max_length=512)
    offset: float
    duration: float = Field(gt=0)
    speaker: str | None = Field(None, description="the stereo track name; None for a mono mix")

    @field_validator("offset", "duration")
    @classmethod
    def _finite(cls, value: float) -> float:
        return _finite(value)


class PartRequest(BaseModel):
    """The parameters of a transcribe-part run. Anyone with the Prefect API can start one: nothing in
    it is trusted (ids are UUIDs, chunk keys stay under the session's prefix)."""

    session_id: str
    parent_run_id: str
    part: int = Field(ge=0, lt=1000)
    content_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    language: str | None = Field(None, max_length=16)
    vocabulary: list[str] | None = Field(None, max_length=MAX_VOCABULARY)
    speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    diarize: bool = False  # a mono mix: the part computes its chunks' speaker embeddings
    chunks: list[PartChunk] = Field(min_length=1, max_length=2000)

    @field_validator("session_id", "parent_run_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if (canonical := canonical_uuid(value)) is None:
            raise ValueError("must be a UUID")
        return canonical

    @field_validator("vocabulary")
    @classmethod
    def _terms(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not valid_terms(value):
            raise ValueError(f"terms of 1-{MAX_TERM_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _keys_in_prefix(self) -> PartRequest:
        prefix = run_prefix(self.session_id, self.parent_run_id)
        for c in self.chunks:
            rest = c.key.removeprefix(prefix)
            if rest == c.key or not all(_KEY_PART.match(p) and p not in (".", "..") for p in rest.split("/")):
                raise ValueError(f"chunk key {c.key[:120]!r} is not under {prefix}")
        return self

    @property
    def result_key(self) -> str:
        return part_result_key(self.session_id, self.parent_run_id, self.part)


class SpeakerWindows(BaseModel):
    """A part's speaker embeddings (vibeinsight.diarization.Diarizer.windows), ready for the parent to
    cluster with the other parts'. Embeddings travel as base64 float32 (768 bytes a window)."""

    spans: list[tuple[float, float]] = Field(default_factory=list)
    centres: list[float] = Field(default_factory=list)
    embeddings: str = ""  # base64 of a (len(centres), 192) float32 array

    @classmethod
    def of(cls, spans: list[tuple[float, float]], centres: list[float], embeddings: np.ndarray) -> SpeakerWindows:
        data = np.ascontiguousarray(embeddings, dtype="<f4").tobytes()
        return cls(spans=spans, centres=centres, embeddings=base64.b64encode(data).decode())

    def array(self) -> np.ndarray:
        raw = base64.b64decode(self.embeddings) if self.embeddings else b""
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if arr.size != len(self.centres) * 192:
            raise ValueError(f"{arr.size} floats for {len(self.centres)} windows")
        return arr.reshape(len(self.centres), 192)


class PartError(BaseModel):
    code: str
    message: str


class PartResult(BaseModel):
    """What a part run leaves in the bucket: its chunks' transcripts (blocks.transcriber.ChunkTranscript
    as JSON) and, on a mono mix, its speaker windows; or the error code it failed with."""

    part: int
    transcripts: list[dict] = Field(default_factory=list)
    windows: SpeakerWindows | None = None
    usage: list[dict] = Field(default_factory=list)  # vibeinsight.usage.ServiceUsage of each billed call
    attempt: str | None = None  # the part run attempt whose calls `usage` lists (vibeinsight.paid.attempt_tag)
    warnings: list[str] = Field(default_factory=list)
    error: PartError | None = None


def next_step(state: str, attempts: int, retry_limit: int = 1) -> Literal["done", "rerun", "fail", "wait"]:
    """What the parent does with a part in `state` after `attempts` runs: a crash (its Machine died) or
    a failure is run again up to `retry_limit` times; a cancelled part fails the session."""
    if state == "COMPLETED":
        return "done"
    if state in ("CRASHED", "FAILED"):
        return "rerun" if attempts <= retry_limit else "fail"
    if state == "CANCELLED":
        return "fail"
    return "wait"


class Progress:
    """The transcribe stage's fraction over parts: each part's finished chunks, weighted by its audio;
    never goes down (a re-run part starts again from zero, its earlier count stands)."""

    def __init__(self, audio_by_part: list[tuple[float, int]]) -> None:
        self.audio = audio_by_part  # (audio seconds, chunks) per part
        self.done = [0] * len(audio_by_part)
        self.total = sum(a for a, _ in audio_by_part) or 1.0

    def update(self, part: int, finished_chunks: int) -> float:
        self.done[part] = max(self.done[part], min(finished_chunks, self.audio[part][1]))
        return self.fraction()

    def finish(self, part: int) -> float:
        return self.update(part, self.audio[part][1])

    def fraction(self) -> float:
        return sum(a * d / max(n, 1) for (a, n), d in zip(self.audio, self.done, strict=True)) / self.total
