"""OpenTelemetry traces, one per session: its trace id is the session's UUID (the `trace_id` of its
log lines too). ENABLE_TRACING=true installs the SDK with the OTLP/HTTP exporter, which reads the
standard OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME (and OTEL_EXPORTER_OTLP_HEADERS).

Prefect 3.9 already opens a span per flow run and per task run (prefect.telemetry.run_telemetry) on
the global tracer provider, and parents a flow run's span on the W3C traceparent in its
`__OTEL_TRACEPARENT` label or on the current span. So a session's trace is rooted at one implicit
span: the session's trace id with a span id taken from the same UUID (`root_context`). The CLI makes
it current before running the flow, `vibeinsight trigger` puts it into the flow run's label, and
work outside a run (status writes from the writer thread) parents on it too. Below those, this
module adds the spans Prefect cannot know: a stage, a chunk, an outside call, with sizes, retries
and the error code. Without ENABLE_TRACING the API's no-op spans cost next to nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from vibeinsight.logs import redact, trace_id_hex

TRACER = "vibeinsight"
# A proxy until a provider is installed, then it hands out the provider's tracer: safe to keep.
_tracer = trace.get_tracer(TRACER)
_installed: list[Any] = []  # the SDK provider this process installed (at most one)
_lock = threading.Lock()


def session_trace_id(session_id: str) -> int:
    return int(trace_id_hex(session_id) or "0", 16)


def root_span_id(session_id: str) -> int:
    """The implicit root span of a session: its id is the low 64 bits of the session's UUID."""
    return (session_trace_id(session_id) & (2**64 - 1)) or 1


def root_context(session_id: str):
    """A context whose (remote, sampled) parent is the session's implicit root span."""
    parent = SpanContext(trace_id=session_trace_id(session_id), span_id=root_span_id(session_id), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def traceparent(session_id: str) -> str:
    """W3C traceparent of the session's root: what `vibeinsight trigger` puts in the run's label."""
    return f"00-{session_trace_id(session_id):032x}-{root_span_id(session_id):016x}-01"


def in_session(session_id: str | None) -> bool:
    ctx = trace.get_current_span().get_span_context()
    return bool(session_id) and ctx.is_valid and ctx.trace_id == session_trace_id(session_id)


@contextmanager
def session(session_id: str) -> Iterator[None]:
    """Make the session's root current (the CLI wraps its flow call in it)."""
    token = otel_context.attach(root_context(session_id))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def span(name: str, session_id: str | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """A child of the current span, or of the session's root when the current span is in no trace
    of this session. A PipelineError (or any error) marks it ERROR with `error.code`."""
    from vibeinsight.errors import error_code

    parent = None if not session_id or in_session(session_id) else root_context(session_id)
    attrs = {f"vibeinsight.{k}": v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=parent, attributes=attrs, record_exception=False,
                                      set_status_on_exception=False) as s:
        try:
            yield s
        except BaseException as exc:
            # the error's text is operator detail: spans carry it masked as log lines are
            import traceback

            text = redact(str(exc))
            s.set_attribute("error.code", error_code(exc))
            s.record_exception(exc, attributes={"exception.message": text, "exception.stacktrace":
                                                redact("".join(traceback.format_exception(exc)))})
            s.set_status(Status(StatusCode.ERROR, text[:200]))
            raise


def set_attributes(s: trace.Span, **attributes: Any) -> None:
    s.set_attributes({f"vibeinsight.{k}": v for k, v in attributes.items() if v is not None})


def enabled() -> bool:
    from vibeinsight.settings import get_settings

    return get_settings().enable_tracing


def setup() -> bool:
    """Install the SDK and the OTLP/HTTP exporter once per process when ENABLE_TRACING is true."""
    if not enabled():
        return False
    with _lock:
        if _installed:
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Resource.create reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; the default name says whose spans these are.
        resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "vibeinsight"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint from OTEL_EXPORTER_OTLP_*
        trace.set_tracer_provider(provider)
        _installed.append(provider)
        return True


def flush(timeout_s: float = 10.0) -> None:
    """Send what is buffered (a short-lived process calls this before it exits)."""
    for provider in _installed:
        provider.force_flush(int(timeout_s * 1000))
