"""Turn OTLP trace data, protobuf or JSON (as Jaeger's /api/v3 answers), into contract Spans."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from lantern_runtime.trace_contract import INTERNAL, OTLP_KINDS, Span

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_JSON_KINDS = {
    "SPAN_KIND_INTERNAL": "internal",
    "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client",
    "SPAN_KIND_PRODUCER": "producer",
    "SPAN_KIND_CONSUMER": "consumer",
}
_STATUS_ERROR = 2


def _proto_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_proto_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _proto_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def spans_from_otlp_proto(request: ExportTraceServiceRequest) -> list[Span]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _proto_value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=OTLP_KINDS.get(span.kind, INTERNAL),
                        service=service,
                        attributes={kv.key: _proto_value(kv.value) for kv in span.attributes},
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        error=span.status.code == _STATUS_ERROR,
                        scope=scope_spans.scope.name,
                        resource=resource,
                    )
                )
    return spans


def _json_id(value: str | None, size: int) -> str | None:
    """OTLP/JSON ids are hex; some encoders (gogo jsonpb) send base64 instead."""
    if not value:
        return None
    if len(value) == size * 2:
        return value.lower()
    return base64.b64decode(value).hex()


def _json_value(value: dict[str, Any]) -> Any:
    for key, item in value.items():
        if key == "arrayValue":
            return [_json_value(v) for v in item.get("values", [])]
        if key == "kvlistValue":
            return {kv["key"]: _json_value(kv["value"]) for kv in item.get("values", [])}
        if key == "intValue":
            return int(item)
        return item
    return None


def _json_kind(kind: Any) -> str:
    if isinstance(kind, int):
        return OTLP_KINDS.get(kind, INTERNAL)
    return _JSON_KINDS.get(str(kind), INTERNAL)


def spans_from_otlp_json(document: dict[str, Any]) -> list[Span]:
    """Spans from an OTLP/JSON document, bare or wrapped in Jaeger's {"result": ...}."""
    document = document.get("result", document)
    spans = []
    for resource_spans in document.get("resourceSpans", []):
        resource = {
            kv["key"]: _json_value(kv["value"])
            for kv in resource_spans.get("resource", {}).get("attributes", [])
        }
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                trace_id = _json_id(span["traceId"], 16)
                span_id = _json_id(span["spanId"], 8)
                if not trace_id or not span_id:
                    raise ValueError(f"span {span.get('name')!r} lacks a trace or span id")
                spans.append(
                    Span(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=_json_id(span.get("parentSpanId"), 8),
                        name=span.get("name", ""),
                        kind=_json_kind(span.get("kind", 1)),
                        service=service,
                        attributes={kv["key"]: _json_value(kv["value"]) for kv in span.get("attributes", [])},
                        start_ns=int(span.get("startTimeUnixNano", 0)),
                        end_ns=int(span.get("endTimeUnixNano", 0)),
                        error=span.get("status", {}).get("code") in (_STATUS_ERROR, "STATUS_CODE_ERROR"),
                        scope=scope_spans.get("scope", {}).get("name", ""),
                        resource=resource,
                    )
                )
    return spans


def spans_from_jaeger_json(document: dict[str, Any]) -> list[Span]:
    """Spans from Jaeger's query API (`GET /api/traces/{id}`, the format its UI reads)."""
    spans = []
    for trace in document.get("data", []):
        processes = trace.get("processes", {})
        for span in trace.get("spans", []):
            tags = {tag["key"]: tag["value"] for tag in span.get("tags", [])}
            # A span may also reference spans of other traces; its parent is in its own.
            parent = next(
                (
                    ref["spanID"]
                    for ref in span.get("references", [])
                    if ref.get("refType") == "CHILD_OF" and ref.get("traceID") == span["traceID"]
                ),
                None,
            )
            start_us = int(span.get("startTime", 0))
            spans.append(
                Span(
                    trace_id=str(span["traceID"]).rjust(32, "0"),
                    span_id=str(span["spanID"]).rjust(16, "0"),
                    parent_span_id=str(parent).rjust(16, "0") if parent else None,
                    name=span.get("operationName", ""),
                    kind=str(tags.pop("span.kind", INTERNAL)),
                    service=processes.get(span.get("processID"), {}).get("serviceName", "unknown"),
                    attributes=tags,
                    start_ns=start_us * 1000,
                    end_ns=(start_us + int(span.get("duration", 0))) * 1000,
                    error=tags.get("error") is True or tags.get("otel.status_code") == "ERROR",
                )
            )
    return spans
