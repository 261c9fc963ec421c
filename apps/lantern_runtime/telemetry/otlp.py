"""OTLP/HTTP span export that writes the protobuf wire format directly.

The SDK's encoder builds a protobuf object for every span, attribute and value before
serialising them: about 70 µs a span, as much as creating the span. A span here is a handful
of byte strings joined; an attribute that repeats (`messaging.system=rabbitmq`, a route) is
encoded once and reused, and each resource and scope once per process. The bytes are the
same message: tests parse both encodings and compare them.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common.proto.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from struct import Struct
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext
    from opentelemetry.util.types import Attributes

_logger = logging.getLogger(__name__)

_FIXED64 = Struct("<Q").pack
_FIXED32 = Struct("<I").pack
_DOUBLE = Struct("<d").pack
_SMALL_VARINTS = [bytes((n,)) for n in range(0x80)]
# SpanFlags: the parent's remoteness is known (0x100), and it is remote (0x200).
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(0x300)
# Attribute values seen often enough to be worth remembering; emptied when full, since ids
# and timestamps would otherwise fill it.
_KEY_VALUE_CACHE_SIZE = 4096


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0:
        n += 1 << 64  # int64 as two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    # AnyValue's members form a oneof, so a zero value is still written.
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


_key_values: dict[tuple[str, Any, type], bytes] = {}


def _attributes(tag: bytes, attributes: Attributes) -> bytes:
    """Each attribute as a repeated KeyValue field `tag`."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        # The type is part of the key: True == 1, but they encode differently.
        cache_key = (key, value, type(value))
        try:
            encoded = _key_values.get(cache_key)
        except TypeError:  # an unhashable value (a list)
            encoded = None
        if encoded is None:
            try:
                encoded = _field(tag, _key_value(key, value))
            except TypeError as error:
                _logger.error("dropping span attribute %s: %s", key, error)
                continue
            if isinstance(value, str | bool | int | float):
                if len(_key_values) >= _KEY_VALUE_CACHE_SIZE:
                    _key_values.clear()
                _key_values[cache_key] = encoded
        parts.append(encoded)
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> bytes:
    return _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL


def _event(event: Event) -> bytes:
    body = b"\x09" + _FIXED64(event.timestamp) + _field(b"\x12", event.name.encode())
    body += _attributes(b"\x1a", event.attributes)
    if event.dropped_attributes:
        body += b"\x20" + _varint(event.dropped_attributes)
    return _field(b"\x5a", body)


def _link(link: Link) -> bytes:
    context = link.context
    body = b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
    body += b"\x12\x08" + context.span_id.to_bytes(8, "big")
    body += _attributes(b"\x22", link.attributes)
    if link.dropped_attributes:
        body += b"\x28" + _varint(link.dropped_attributes)
    # Link.flags is field 6, a fixed32.
    return _field(b"\x6a", body + b"\x35" + _flags(context)[2:])


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts += (
        _field(b"\x2a", span.name.encode()),
        # SpanKind: the API counts from INTERNAL = 0, OTLP from UNSPECIFIED = 0.
        b"\x30",
        _SMALL_VARINTS[span.kind.value + 1],
        b"\x39",
        _FIXED64(span.start_time or 0),
        b"\x41",
        _FIXED64(span.end_time or 0),
        _attributes(b"\x4a", span.attributes),
    )
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    for event in span.events:
        parts.append(_event(event))
    if span.dropped_events:
        parts += (b"\x60", _varint(span.dropped_events))
    for link in span.links:
        parts.append(_link(link))
    if span.dropped_links:
        parts += (b"\x70", _varint(span.dropped_links))
    status = span.status
    status_body = b""
    if status.description:
        status_body += _field(b"\x12", status.description.encode())
    if status.status_code.value:
        status_body += b"\x18" + _SMALL_VARINTS[status.status_code.value]
    parts += (_field(b"\x7a", status_body), _flags(parent))
    return b"".join(parts)


# Resources and scopes live as long as the process: encode each once.
_resources: dict[int, tuple[Resource, bytes]] = {}
_scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}


def _resource(resource: Resource) -> bytes:
    cached = _resources.get(id(resource))
    if cached is None or cached[0] is not resource:
        encoded = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        if resource.schema_url:
            encoded += _field(b"\x1a", resource.schema_url.encode())
        cached = _resources[id(resource)] = (resource, encoded)
    return cached[1]


def _scope(scope: InstrumentationScope | None) -> bytes:
    cached = _scopes.get(id(scope))
    if cached is None or cached[0] is not scope:
        body = b""
        if scope is not None:
            body = _field(b"\x0a", scope.name.encode())
            if scope.version:
                body += _field(b"\x12", scope.version.encode())
            body += _attributes(b"\x1a", scope.attributes)
        encoded = _field(b"\x0a", body)
        if scope is not None and scope.schema_url:
            encoded += _field(b"\x1a", scope.schema_url.encode())
        cached = _scopes[id(scope)] = (scope, encoded)
    return cached[1]


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope."""
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        by_scope = groups.setdefault(id(resource), (resource, {}))[1]
        by_scope.setdefault(id(scope), (scope, []))[1].append(_field(b"\x12", _span(span)))
    request = []
    for resource, by_scope in groups.values():
        # ResourceSpans: resource (1) with its schema_url (3), then each ScopeSpans (2).
        scope_spans = b"".join(
            _field(b"\x12", _scope(scope) + b"".join(encoded)) for scope, encoded in by_scope.values()
        )
        request.append(_field(b"\x0a", _resource(resource) + scope_spans))
    return b"".join(request)


class LeanOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP protobuf exporter (endpoint, headers, TLS, compression, retries from
    OTEL_EXPORTER_OTLP_*), with the encoder above."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                payload = encode_spans(spans)
            except Exception as error:
                _logger.exception("failed to encode a batch of %d spans", len(spans))
                result.error = error
                return SpanExportResult.FAILURE
            sent = self._client.export(payload)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
