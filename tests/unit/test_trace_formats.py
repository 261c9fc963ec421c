"""Spans survive the trip through OTLP protobuf and OTLP/JSON unchanged in what the contract reads."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lantern_runtime.trace_formats import (
    spans_from_jaeger_json,
    spans_from_otlp_json,
    spans_from_otlp_proto,
)


def recorded_spans() -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("POST /api/orders", kind=SpanKind.SERVER),
        tracer.start_as_current_span(
            "publish order.created",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "rabbitmq"},
        ) as span,
    ):
        span.set_status(StatusCode.ERROR)
    return exporter.get_finished_spans()


def test_protobuf_spans_keep_ids_parents_kinds_services_and_errors() -> None:
    sdk_spans = recorded_spans()
    spans = spans_from_otlp_proto(encode_spans(sdk_spans))
    by_name = {span.name: span for span in spans}
    server, producer = by_name["POST /api/orders"], by_name["publish order.created"]
    assert server.parent_span_id is None
    assert producer.parent_span_id == server.span_id
    assert (server.kind, producer.kind) == ("server", "producer")
    assert {span.service for span in spans} == {"orders"}
    assert producer.attributes == {"messaging.system": "rabbitmq"}
    assert producer.error and not server.error
    assert server.trace_id == format(sdk_spans[0].context.trace_id, "032x")


def test_json_spans_with_base64_ids_match_the_protobuf_ones() -> None:
    request = encode_spans(recorded_spans())
    from_json = spans_from_otlp_json({"result": MessageToDict(request)})
    assert sorted(from_json, key=lambda s: s.name) == sorted(
        spans_from_otlp_proto(request), key=lambda s: s.name
    )


def test_jaeger_query_spans_take_service_kind_and_same_trace_parent() -> None:
    trace_id = "0" * 31 + "1"
    document = {
        "data": [
            {
                "traceID": trace_id,
                "processes": {"p1": {"serviceName": "gateway"}, "p2": {"serviceName": "orders"}},
                "spans": [
                    {
                        "traceID": trace_id,
                        "spanID": "0000000000000002",
                        "operationName": "POST /api/orders",
                        "references": [],
                        "startTime": 1_000,
                        "duration": 5,
                        "tags": [{"key": "span.kind", "type": "string", "value": "server"}],
                        "processID": "p1",
                    },
                    {
                        "traceID": trace_id,
                        "spanID": "0000000000000003",
                        "operationName": "publish order.created",
                        "references": [
                            {"refType": "CHILD_OF", "traceID": "f" * 32, "spanID": "f" * 16},
                            {"refType": "CHILD_OF", "traceID": trace_id, "spanID": "0000000000000002"},
                        ],
                        "startTime": 1_001,
                        "duration": 2,
                        "tags": [
                            {"key": "span.kind", "type": "string", "value": "producer"},
                            {"key": "error", "type": "bool", "value": True},
                        ],
                        "processID": "p2",
                    },
                ],
            }
        ]
    }
    server, producer = spans_from_jaeger_json(document)
    assert (server.service, server.kind, server.parent_span_id) == ("gateway", "server", None)
    assert (producer.service, producer.kind) == ("orders", "producer")
    assert producer.parent_span_id == server.span_id
    assert producer.error
    assert producer.duration_ms == 0.002
