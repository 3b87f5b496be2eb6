"""Operator detail reaches spans masked as it reaches log lines (vibeinsight.tracing.span)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vibeinsight import logs, tracing
from vibeinsight.errors import StorageFailed

pytestmark = pytest.mark.unit

KEY = "sk-span-test-4b8e2d71"


def test_a_failed_spans_error_text_is_masked(monkeypatch):
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))  # this test's own provider
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    logs.secrets.cache_clear()
    try:
        with pytest.raises(StorageFailed), tracing.span("storage.put"):
            raise StorageFailed(f"PUT http://10.0.3.7/results/x.json refused for key {KEY}")
    finally:
        logs.secrets.cache_clear()
    [span] = exporter.get_finished_spans()
    assert span.attributes["error.code"] == "storage_failed"
    [event] = span.events
    assert "10.0.3.7" in event.attributes["exception.message"]  # the detail is there, for operators
    recorded = [event.attributes["exception.message"], event.attributes["exception.stacktrace"],
                span.status.description]
    assert all(logs.MASK in text and KEY not in text for text in recorded)
