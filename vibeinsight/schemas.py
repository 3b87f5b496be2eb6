"""The result document and the status row: the interface clients and later issues build on."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vibeinsight.usage import Usage

# 1.1: words, per-segment language and speaker on mono, languages, diarization.
# 1.2: error.detail removed: users read the code and its fixed sentence; the detail goes to the logs.
# 1.3: parts, the part runs a long recording's transcription was fanned out over.
SCHEMA_VERSION = "1.3"


class Status(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CRASHED, Status.CANCELLED})

Stage = Literal["queued", "ingest", "transcode", "transcribe", "analyze", "publish", "done"]


class SourceInfo(BaseModel):
    uri: str
    bytes: int
    sha256: str
    container: str
    codec: str
    duration_s: float
    channels: int
    sample_rate: int


class ChunkInfo(BaseModel):
    index: int
    track: str = Field(description="'mix', or 'left'/'right' for speaker tracks")
    start: float
    end: float
    bytes: int
    key: str = Field(description="file name inside the run's workspace")


class TranscodeInfo(BaseModel):
    codec: str
    bitrate_kbps: int
    sample_rate: int
    bytes: int
    tracks: list[str]
    chunks: list[ChunkInfo]
    speech_s: float | None = Field(None, description="audio that is not silence, per silencedetect")


class Word(BaseModel):
    start: float = Field(description="seconds from the start of the recording")
    end: float
    word: str = Field(description="as the model wrote it, with its leading space if any")
    probability: float | None = Field(None, ge=0.0, le=1.0, description="None when the engine gives none (OpenAI)")


class Segment(BaseModel):
    start: float
    end: float
    text: str
    confidence: float = Field(ge=0.0, le=1.0)
    speaker: str | None = Field(None, description="'left'/'right' for stereo speaker tracks; 'S1', 'S2', … from "
                                                  "diarization of a mono mix")
    language: str | None = Field(None, description="the language this segment was decoded in (1.1)")
    words: list[Word] | None = Field(None, description="word timings, when the engine gives them (1.1)")


class DiarizationInfo(BaseModel):
    method: Literal["channels", "embeddings"] = Field(description="channels: one speaker per stereo channel; "
                                                                  "embeddings: CAM++ clustering of a mono mix")
    speakers: int
    requested_speakers: int | None = None
    max_speakers: int | None = None


class Transcript(BaseModel):
    language: str
    language_probability: float | None = None
    model: str
    text: str
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    segments: list[Segment]
    languages: dict[str, float] | None = Field(None, description="share of the speech per language (1.1)")
    vocabulary: list[str] | None = Field(None, description="the vocabulary hint given to the engine (1.1)")
    diarization: DiarizationInfo | None = Field(None, description="how speakers were found (1.1)")


class ErrorInfo(BaseModel):
    """What a user may read about a failure. What exactly went wrong (tool output, provider text,
    endpoints, paths) is for operators: the run's logs and spans carry it, never this document (1.2)."""

    code: str
    message: str = Field(description="the code's fixed sentence, what users read (vibeinsight.errors.user_message)")
    stage: str | None = None


class PartInfo(BaseModel):
    """One part run of a fanned-out transcription (1.3)."""

    flow_run_id: str = Field(description="the transcribe-part flow run that delivered the part")
    chunks: list[int] = Field(description="indices of the part's chunks (transcode.chunks)")
    audio_s: float = Field(description="seconds of audio in the part")
    wall_s: float | None = Field(None, description="the part run's own run time, seconds")
    attempts: int = Field(1, description="runs it took: 2 when the first one crashed or failed")


class ResultDocument(BaseModel):
    model_config = ConfigDict(title="VibeInsight result document")

    schema_version: str = SCHEMA_VERSION
    session_id: str
    user_id: str | None = None
    flow_run_id: str | None = None
    status: Status
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    source: SourceInfo | dict[str, Any] | None = None
    transcode: TranscodeInfo | None = None
    transcript: Transcript | None = None
    parts: list[PartInfo] | None = Field(None, description="the part runs the transcription was fanned out "
                                                           "over, in order; None: one run did it all (1.3)")
    analysis: dict[str, Any] | None = Field(None, description="engine plus its metrics")
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None


MAX_MESSAGE_BYTES = 480  # keeps a row, and each Realtime payload, well under 1 KB even in Japanese


def clip_utf8(text: str | None, limit: int = MAX_MESSAGE_BYTES) -> str | None:
    """Cut to at most `limit` UTF-8 bytes without splitting a character."""
    if text is None or len(text.encode()) <= limit:
        return text
    return text.encode()[: limit - 3].decode("utf-8", errors="ignore").rstrip() + "…"


class StatusUpdate(BaseModel):
    """One write to a session's row. seq orders writers: an older one never wins."""

    session_id: str
    status: Status
    seq: int
    user_id: str | None = None
    flow_run_id: str | None = None
    stage: str | None = None
    progress: int | None = Field(None, ge=0, le=100)
    error_code: str | None = None
    error_message: str | None = Field(None, description=f"at most {MAX_MESSAGE_BYTES} UTF-8 bytes; longer is clipped")
    result_key: str | None = None
    # the session's run request this write comes from (vibeinsight.status_rule.attempt_of); None: a
    # run request_run() did not start, which may write only rows no request_run() manages
    attempt: int | None = Field(None, ge=0)

    @field_validator("error_message")
    @classmethod
    def _clip(cls, value: str | None) -> str | None:
        return clip_utf8(value)


class StatusRow(BaseModel):
    session_id: str
    user_id: str | None = None
    flow_run_id: str | None = None
    status: Status
    stage: str | None = None
    progress: int = 0
    error_code: str | None = None
    error_message: str | None = None
    result_key: str | None = None
    seq: int = 0
    attempt: int | None = None  # the current run request (None: a row request_run() does not manage)
    updated_at: datetime


class SessionWriter(BaseModel):
    """Who may write a session: its row's owner, current attempt and current run (status_rule.conflict_with)."""

    user_id: str | None = None
    attempt: int | None = None
    flow_run_id: str | None = None


def result_json_schema() -> str:
    return json.dumps(ResultDocument.model_json_schema(), indent=2, ensure_ascii=False)
