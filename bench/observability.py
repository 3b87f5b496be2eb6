"""What logs and traces cost: microseconds per log line (JSON with the session's fields vs Prefect's
text format) and per span (the SDK with its batch processor vs tracing off), from one run.

    python bench/observability.py [--lines 20000] [--spans 20000]

Prints both costs and the ratios; a pipeline run logs ~100 lines and opens ~50 spans, so the
figures times those counts is what observability adds to a session.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def per_line_us(formatter: logging.Formatter, n: int) -> float:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"bench.{id(formatter)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    for i in range(n):
        logger.info("chunk %d of %s: %d bytes", i, "session", 32059)
    return (time.perf_counter() - t0) / n * 1e6


def per_span_us(n: int, session: str) -> float:
    from vibeinsight import tracing

    t0 = time.perf_counter()
    for i in range(n):
        with tracing.span("chunk", session, chunk=i, bytes=32059) as s:
            tracing.set_attributes(s, calls=1)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--spans", type=int, default=20000)
    args = ap.parse_args()

    from prefect.logging.formatters import PrefectFormatter

    from vibeinsight import logs

    session = "4a7b1c9d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"
    text = PrefectFormatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S")
    with logs.bind(session_id=session, flow_run_id=session, stage="transcribe"):
        text_us = per_line_us(text, args.lines)
        json_us = per_line_us(logs.JsonFormatter(), args.lines)
    off_us = per_span_us(args.spans, session)  # no SDK: the API's no-op spans

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):  # measures our side only: encoding and sending are the exporter's
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    on_us = per_span_us(args.spans, session)
    provider.shutdown()

    print(f"log line: text {text_us:.1f} us, json {json_us:.1f} us  (json/text {json_us / text_us:.2f}x)")
    print(f"span: tracing off {off_us:.1f} us, on {on_us:.1f} us  (on/off {on_us / off_us:.1f}x)")
    print(f"per session (~100 lines, ~50 spans): {100 * json_us / 1000 + 50 * on_us / 1000:.2f} ms with json + tracing")


if __name__ == "__main__":
    main()
