"""An OTLP/HTTP trace receiver on 127.0.0.1, as the OpenTelemetry protocol specifies it: POST
/v1/traces with an ExportTraceServiceRequest in binary protobuf, answered 200 with an
ExportTraceServiceResponse. Spans are decoded with opentelemetry-proto."""

from __future__ import annotations

import threading

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.http_standin import HTTPStandin, QuietHandler


class OTLPReceiver(HTTPStandin):
    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.read_body()
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    outer.add(body)
                self.send_body(200 if ok else 404, ExportTraceServiceResponse().SerializeToString(),
                               "application/x-protobuf")

        super().__init__(Handler)

    @property
    def endpoint(self) -> str:
        return self.url

    def add(self, body: bytes) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with self.lock:
            self.requests += 1
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                            "parent_id": s.parent_span_id.hex() or None, "scope": ss.scope.name,
                            "attributes": {a.key: _value(a.value) for a in s.attributes},
                            "status": s.status.code, "events": [e.name for e in s.events], "resource": resource,
                        })


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None
