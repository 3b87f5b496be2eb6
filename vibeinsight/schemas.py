"""The result document and the status row: the interface clients and later issues build on."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"


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


class Segment(BaseModel):
    start: float
    end: float
    text: str
    confidence: float = Field(ge=0.0, le=1.0)
    speaker: str | None = None


class Transcript(BaseModel):
    language: str
    language_probability: float | None = None
    model: str
    text: str
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    segments: list[Segment]


class Usage(BaseModel):
    """What a run moved and spent: the result document's usage, and the quota ledger's input."""

    bytes_in: int = Field(0, description="upload bytes read from storage")
    bytes_transcoded: int = Field(0, description="compact audio produced by transcode")
    bytes_out: int = Field(0, description="bytes written to storage (results)")
    bytes_sent: dict[str, int] = Field(default_factory=dict, description="bytes sent to each API service")
    api_calls: dict[str, int] = Field(default_factory=dict, description="requests per service")
    retries: dict[str, int] = Field(default_factory=dict, description="retried requests per service")
    audio_seconds: float = 0.0
    audio_minutes_billed: float = 0.0
    tokens: dict[str, int] = Field(default_factory=dict, description="e.g. gemini_input, gemini_output")
    cost_usd: float = 0.0
    cost_by_service: dict[str, float] = Field(default_factory=dict)
    storage: str = Field("local", description="which storage served the run: local, primary or fallback")


class ErrorInfo(BaseModel):
    code: str
    message: str
    stage: str | None = None


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
    analysis: dict[str, Any] | None = Field(None, description="engine plus its metrics")
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None


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
    error_message: str | None = Field(None, max_length=500)
    result_key: str | None = None


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
    updated_at: datetime


def result_json_schema() -> str:
    return json.dumps(ResultDocument.model_json_schema(), indent=2, ensure_ascii=False)
