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
        # What the failed work had already been billed for (a vibeinsight.usage.ServiceUsage), so a
        # failed call still reaches the result document's usage and the ledger.
        self.usage = None

    def __reduce__(self):  # keep code and usage across pickling (Prefect persists task states)
        return (type(self), (self.message, self.code), {"usage": self.usage})

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


class SessionConflict(PipelineError):
    """The run is not the session's to write: another user's session, or not its current run. The
    run fails without touching the row or the result (no retry: the session will not change hands)."""

    default_code = "session_conflict"


def error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, PipelineError) else "internal"


# --- what users read -------------------------------------------------------------------------
# `error_message` in the status row (and the result document's `error.message`) is one fixed
# sentence per code: never ffmpeg's log, a provider's error text or an endpoint name. Those go to
# the logs and to the document's `error.detail`, for operators. Japanese where the run asked for
# Japanese (most users), English otherwise.
MESSAGES: dict[str, tuple[str, str]] = {  # code: (English, Japanese)
    "not_found": ("The uploaded file could not be found.", "アップロードされたファイルが見つかりません。"),
    "empty": ("The uploaded file is empty.", "アップロードされたファイルが空です。"),
    "too_large": ("The file is larger than the upload limit.", "ファイルがアップロードの上限を超えています。"),
    "not_audio": ("The file is not an audio or video recording.", "ファイルが音声または動画の録音ではありません。"),
    "unsupported_format": ("This file format is not supported. Please upload a common audio or video file "
                           "(for example MP3, M4A, WAV or WebM).",
                           "このファイル形式には対応していません。MP3・M4A・WAV・WebM などの一般的な音声・動画ファイルを"
                           "アップロードしてください。"),
    "corrupt": ("The recording is damaged and cannot be played.", "録音ファイルが破損しているため再生できません。"),
    "too_short": ("The recording is too short to contain speech.", "録音が短すぎて音声を含められません。"),
    "too_long": ("The recording is longer than the limit.", "録音が上限の長さを超えています。"),
    "media_timeout": ("The recording could not be read in time.", "録音を時間内に読み込めませんでした。"),
    "unsupported_language": ("This language is not supported.", "この言語には対応していません。"),
    "invalid_parameter": ("The request was invalid.", "リクエストが不正です。"),
    "source_not_allowed": ("The file is not one of your uploads.", "このファイルはあなたのアップロードではありません。"),
    "quota_exceeded": ("The service has reached its usage limit for this month. Please try again later.",
                       "今月の利用上限に達しました。しばらくしてから再度お試しください。"),
    "api_rate_limited": ("The service is busy. Please try again later.",
                         "サービスが混み合っています。しばらくしてから再度お試しください。"),
    "api_quota_exhausted": ("The service is temporarily unavailable. Please try again later.",
                            "サービスが一時的に利用できません。しばらくしてから再度お試しください。"),
    "crashed": ("Processing stopped unexpectedly. Please try again.", "処理が予期せず停止しました。もう一度お試しください。"),
    "cancelled": ("Processing was cancelled.", "処理はキャンセルされました。"),
    "session_conflict": ("This processing request does not belong to the session, which was left unchanged.",
                         "この処理要求はセッションに属していないため、セッションは変更されていません。"),
    "stale_pending": ("Processing could not be started. Please try again.", "処理を開始できませんでした。もう一度お試しください。"),
}
GENERIC = ("Processing failed. Please try again later.", "処理に失敗しました。しばらくしてから再度お試しください。")


def user_message(code: str, language: str | None = None) -> str:
    """The fixed sentence users read for `code`, in Japanese when `language` is ja."""
    en, ja = MESSAGES.get(code, GENERIC)
    return ja if (language or "").lower().startswith("ja") else en


def detail_of(exc: BaseException | None) -> str | None:
    """The error's own text, for operators only: the run's log line and span, never the result document or the row."""
    if exc is None:
        return None
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__
