"""Log lines that say which session they belong to: Prefect's text on a terminal, one JSON object a
line elsewhere (LOG_FORMAT=json: Fly Machines and the image), at LOG_LEVEL in every process.

A JSON line has `ts`, `level`, `logger`, `msg`, `session_id`, `flow_run_id`, `stage` and `trace_id`
(the session id's 128 bits in hex, the same id as the session's OpenTelemetry trace), plus
`task_run_id` and `exc` when there are any. The session comes from `bind` (the flow body, the CLI,
the observer per row), else from Prefect's flow-run context (a process-audio run's `session_id`
parameter, or its flow-run id as the flow itself defaults to). Known secrets are masked in every
line, text or JSON.

Prefect's processes (CLI, worker, flow-run subprocesses, server) read `data/logging.yml` through
PREFECT_LOGGING_SETTINGS_PATH; its console handler and formatter are the factories below, so one
file serves both formats. `configure()` sets that up for a process of ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.config
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

LOGGING_YML = Path(__file__).parent / "data" / "logging.yml"
FIELDS = ("session_id", "flow_run_id", "stage")
MASK = "***"
# Prefect's loggers whose level its logging.yml ties to PREFECT_LOGGING_LEVEL.
LEVELLED = ("", "prefect", "prefect.client", "prefect.infrastructure", "vibeinsight")

_context: ContextVar[dict[str, str | None] | None] = ContextVar("vibeinsight_log_context", default=None)
_process: dict[str, str | None] = {}  # a process that serves one session (CLI, flow-run subprocess)
_sessions: dict[str, str] = {}  # flow-run id -> session id seen in its context (for its later lines)
MAX_REMEMBERED = 1000
_sessions_lock = threading.Lock()


@lru_cache(maxsize=1024)
def trace_id_hex(session_id: str | None) -> str | None:
    """The session's trace id: its UUID's 128 bits; any other id is hashed to 128 bits."""
    if not session_id:
        return None
    try:
        return uuid.UUID(str(session_id)).hex
    except ValueError:
        return hashlib.sha256(str(session_id).encode()).hexdigest()[:32]


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Every line logged inside (this thread, and tasks Prefect submits from it) carries `fields`."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if k in FIELDS}})
    try:
        yield
    finally:
        _context.reset(token)


def bind_process(**fields: str | None) -> None:
    """Default fields for every line of this process (threads too): for a process that runs one session."""
    _process.update({k: v for k, v in fields.items() if k in FIELDS})


def current() -> dict[str, str | None]:
    """The bound fields, falling back to Prefect's flow-run context when nothing was bound."""
    ctx = {**_process, **(_context.get() or {})}
    if not ctx.get("session_id") or not ctx.get("flow_run_id"):
        run = _prefect_flow_run()
        if run is not None:
            params = run.parameters or {}
            ctx["flow_run_id"] = ctx.get("flow_run_id") or str(run.id)
            if not ctx.get("session_id") and "session_id" in params:  # process-audio: as the flow defaults it
                ctx["session_id"] = str(params.get("session_id") or run.id)
    if ctx.get("session_id") and ctx.get("flow_run_id") and ctx["flow_run_id"] not in _sessions:
        with _sessions_lock:  # threads log at once
            if len(_sessions) >= MAX_REMEMBERED:
                _sessions.pop(next(iter(_sessions)))
            _sessions[ctx["flow_run_id"]] = ctx["session_id"]
    return ctx


def _prefect_flow_run():
    module = sys.modules.get("prefect.context")  # never import Prefect just to log
    if module is None:
        return None
    try:
        frc = module.FlowRunContext.get()
    except Exception:  # noqa: BLE001 - a log line must never fail
        return None
    return frc.flow_run if frc is not None else None


def record_fields(record: logging.LogRecord) -> dict[str, str | None]:
    """session_id, flow_run_id, stage and trace_id of one record (Prefect's run loggers name their run)."""
    ctx = current()
    flow_run_id = getattr(record, "flow_run_id", None) or ctx.get("flow_run_id")
    flow_run_id = str(flow_run_id) if flow_run_id else None
    # A run's lines after its context closed ("Finished in state …") still name its session. Lines
    # logged before any context of the run (a worker submitting it, its pull steps) have none.
    session_id = ctx.get("session_id") or (_sessions.get(flow_run_id) if flow_run_id else None)
    return {"session_id": session_id, "flow_run_id": flow_run_id, "stage": ctx.get("stage"),
            "trace_id": trace_id_hex(session_id)}


# --- secrets ---

def _secret_values(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from _secret_values(value)


@lru_cache(maxsize=1)
def secrets() -> tuple[str, ...]:
    """Every secret the settings hold, plus Prefect's API key: never to appear in a log line."""
    from vibeinsight.settings import Settings

    try:
        values = set(_secret_values(Settings()))
    except Exception:  # noqa: BLE001 - bad settings are reported elsewhere; mask what the env holds
        values = set()
    values.update(v for k, v in os.environ.items() if v and (k.endswith(("_KEY", "_SECRET", "_SECRET_ACCESS_KEY"))
                                                          or k in ("PREFECT_API_KEY",)))
    # Longest first, so a key that contains another is masked whole; short values would mask ordinary words.
    return tuple(sorted((v for v in values if len(v) >= 6), key=len, reverse=True))


def redact(text: str) -> str:
    for value in secrets():
        if value in text:
            text = text.replace(value, MASK)
    return text


# --- formatters and handlers (named in data/logging.yml) ---

class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the session's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": redact(record.getMessage()),
            **record_fields(record),
        }
        if task_run_id := getattr(record, "task_run_id", None):
            line["task_run_id"] = str(task_run_id)
        for key in ("error_code", "span"):  # extras our own code passes
            if (value := getattr(record, key, None)) is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(line, ensure_ascii=False, default=str))


class RedactingFormatter(logging.Formatter):
    """Wraps a text formatter (Prefect's) and masks secrets in what it writes."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def log_format() -> str:
    from vibeinsight.settings import get_settings

    try:
        return get_settings().log_format
    except Exception:  # noqa: BLE001 - a bad setting must not silence the logs
        return "text"


def console_formatter(**kwargs: Any) -> logging.Formatter:
    """The formatter logging.yml names: JSON, or Prefect's own text format with secrets masked."""
    if log_format() == "json":
        return JsonFormatter()
    from prefect.logging.formatters import PrefectFormatter

    fmt = kwargs.pop("format", None)
    return RedactingFormatter(PrefectFormatter(format=fmt, **kwargs))


def console_handler(**kwargs: Any) -> logging.Handler:
    """The handler logging.yml names: plain lines on stderr for JSON, Prefect's rich console for text."""
    stream = kwargs.pop("stream", None) or sys.stderr
    if log_format() == "json":
        return logging.StreamHandler(stream)
    from prefect.logging.handlers import PrefectConsoleHandler

    return PrefectConsoleHandler(stream=stream, **kwargs)


def prefect_env(level: str | None = None) -> dict[str, str]:
    """What a Prefect process needs in its environment to log this way (set before Prefect is imported)."""
    from vibeinsight.settings import get_settings

    env = {"PREFECT_LOGGING_SETTINGS_PATH": str(LOGGING_YML)}
    level = level or os.environ.get("LOG_LEVEL") and get_settings().log_level
    if level:
        env["PREFECT_LOGGING_LEVEL"] = level.upper()
    return env


def configure(level: str | None = None) -> None:
    """Log this process through data/logging.yml at `level` (default LOG_LEVEL), whether Prefect is
    imported yet or not (the env is read at Prefect's import; later, the same file is applied here)."""
    os.environ.update(prefect_env(level))
    secrets.cache_clear()
    if "prefect" not in sys.modules:
        return
    from prefect.logging.configuration import load_logging_config

    logging.config.dictConfig(load_logging_config(LOGGING_YML))
    if lvl := os.environ.get("PREFECT_LOGGING_LEVEL"):  # Prefect's templates hold the level it was imported with
        for name in LEVELLED:
            logging.getLogger(name).setLevel(lvl)


def cli_error(code: str, message: str) -> None:
    """The one stderr line of a failed command: `error: CODE: message`, or a JSON line in JSON mode."""
    if log_format() == "json":
        record = logging.LogRecord("vibeinsight.cli", logging.ERROR, __file__, 0, f"{code}: {message}", None, None)
        record.error_code = code
        print(JsonFormatter().format(record), file=sys.stderr)
    else:
        print(f"error: {code}: {redact(message)}", file=sys.stderr)
