"""Failures a run can end with, each carrying a stable reason code."""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """A failure with a machine-readable code; the message is for people."""

    default_code: ClassVar[str] = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message

    def __reduce__(self):  # keep code across pickling (Prefect may persist states)
        return (type(self), (self.message, self.code))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InputRejected(PipelineError):
    """The upload itself is unusable; retrying cannot help (CLI exit code 2)."""

    default_code = "rejected"


class TranscodeFailed(PipelineError):
    default_code = "transcode_failed"


class TranscriptionFailed(PipelineError):
    default_code = "transcription_failed"


class StorageFailed(PipelineError):
    default_code = "storage_failed"


def error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, PipelineError) else "internal"
