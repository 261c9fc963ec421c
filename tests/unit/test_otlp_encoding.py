"""Lantern's OTLP span encoder writes the same ExportTraceServiceRequest as the SDK's."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from lantern_runtime.telemetry.otlp import LeanOTLPSpanExporter, encode_spans

REMOTE_PARENT = {
    "traceparent": "00-94e183f1b16ada326cb26ac1602aaaa4-d543bcb7bc77533d-01",
    "tracestate": "vendor=a1,other=b2",
}


def record(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("lantern.test", "1.2.3", attributes={"scope.kind": "test"})
    other = provider.get_tracer("other")
    parent = propagate.extract(REMOTE_PARENT)
    for i in range(40):
        span = tracer.start_span(
            f"process order.created {i}",
            context=parent,
            kind=SpanKind(i % 5),
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.message.id": f"m-{i}",
                "count": i - 20,
                "big": -(2**40) if i % 2 else 2**62,
                "ratio": i / 7,
                "flag": i % 3 == 0,
                "empty": "",
                "zero": 0,
                "names": ["a", "b"],
                "numbers": [1, -2, 3],
                "flags": [True, False],
            },
        )
        if i % 4 == 0:
            span.add_event("message.retry_scheduled", {"attempt": i, "reason": "é timeout"})
            span.add_link(trace.get_current_span(parent).get_span_context(), {"link.kind": "follows"})
            span.set_status(Status(StatusCode.ERROR, "boom ✗"))
        elif i % 4 == 1:
            span.set_status(Status(StatusCode.OK))
        span.end()
        with (
            other.start_as_current_span("root"),
            other.start_as_current_span("child", links=[Link(span.get_span_context())]),
        ):
            pass


@pytest.fixture
def spans() -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    for resource in (
        Resource.create({"service.name": "orders", "deployment.environment.name": "test"}),
        Resource({"service.name": "payments"}, schema_url="https://opentelemetry.io/schemas/1.44.0"),
    ):
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        record(provider)
    return exporter.get_finished_spans()


def test_the_encoding_parses_to_the_same_request_as_the_sdks(spans: Sequence[ReadableSpan]) -> None:
    expected = sdk_encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == expected
    # Twice: the second time from the caches of resources, scopes and repeated attributes.
    assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == expected


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_spans([]) == b""


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces", _Receiver.bodies
    finally:
        server.shutdown()


def test_the_exporter_posts_the_encoded_batch_over_otlp_http(
    spans: Sequence[ReadableSpan], receiver: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    endpoint, bodies = receiver
    exporter = LeanOTLPSpanExporter(endpoint=endpoint)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    [(path, content_type, body)] = bodies
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert ExportTraceServiceRequest.FromString(body) == sdk_encode_spans(spans)
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE
