"""OTLP/HTTP span export that writes the protobuf wire format directly.

The SDK's encoder builds a protobuf object for every span, attribute and value before
serialising them: about 70 µs a span, as much as creating the span. A span here is a handful
of byte strings joined; an attribute that repeats (`messaging.system=rabbitmq`, a route) is
encoded once and reused, and each resource and scope once per process. The bytes are the
same message: tests parse both encodings and compare them. LeanOTLPSpanExporter sends it with
an HTTP client of its own, configured and retrying as the SDK's exporter.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common.proto.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import random
import ssl
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from importlib import metadata
from struct import Struct
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.re import parse_env_headers

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


# What the SDK's OTLP/HTTP exporter retries: throttling and a collector or proxy that is down.
_RETRYABLE_STATUS = frozenset((429, 502, 503, 504))
# And connection errors: refused, reset, or a pooled connection the collector closed meanwhile.
_CONNECTION_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
_MAX_ATTEMPTS = 6
_JITTER = 0.2
DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024


def _env(signal_variable: str, variable: str) -> str | None:
    """OTEL_EXPORTER_OTLP_TRACES_<X>, or else OTEL_EXPORTER_OTLP_<X>; unset or empty is None."""
    return os.environ.get(signal_variable) or os.environ.get(variable) or None


@dataclass(frozen=True)
class OTLPHTTPConfig:
    """Where and how spans are sent, from the variables the SDK's OTLP/HTTP span exporter reads,
    with its defaults and precedence (the TRACES_ variable first)."""

    endpoint: str = "http://localhost:4318/v1/traces"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    compression: str = "none"
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None

    @classmethod
    def from_env(cls) -> OTLPHTTPConfig:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318").removesuffix("/")
            + "/v1/traces"
        )
        raw_headers = _env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or ""
        raw_timeout = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") or "10"
        try:
            timeout = float(raw_timeout)
        except ValueError:
            _logger.warning("Invalid timeout value %r, using default of 10 seconds", raw_timeout)
            timeout = 10.0
        compression = (
            (_env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION") or "none")
            .strip()
            .lower()
        )
        if compression not in ("none", "gzip", "deflate"):
            _logger.warning("Unsupported compression type: %s", compression)
            compression = "none"
        return cls(
            endpoint=endpoint,
            headers=parse_env_headers(raw_headers, liberal=True),
            timeout=timeout,
            compression=compression,
            certificate=_env("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"),
            client_certificate=_env(
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
            ),
            client_key=_env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The CA bundle to trust (OTEL_..._CERTIFICATE, or the default one) and the client's own
        certificate and key for mutual TLS."""
        if self.certificate:
            context = ssl.create_default_context(cafile=self.certificate)
        else:
            context = httpx.create_ssl_context()
        if self.client_certificate:
            # As the SDK: a certificate without a key file is a PEM holding both.
            context.load_cert_chain(self.client_certificate, self.client_key)
        return context

    def request_headers(self) -> dict[str, str]:
        headers = {"content-type": "application/x-protobuf", "user-agent": _USER_AGENT}
        headers.update({name.lower(): value for name, value in self.headers.items()})
        if self.compression != "none":
            headers.setdefault("content-encoding", self.compression)
        return headers


_USER_AGENT = f"OTel-OTLP-Exporter-Python/{metadata.version('opentelemetry-sdk')} lantern"


def _compress(payload: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(payload, mtime=0)
    if compression == "deflate":
        return zlib.compress(payload)
    return payload


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (RFC 9110: seconds, or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


class LeanOTLPSpanExporter(SpanExporter):
    """OTLP/HTTP protobuf span export with the encoder above and an HTTP client of its own.

    It behaves as the SDK's OTLPSpanExporter: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS,
    _TIMEOUT, _COMPRESSION (gzip, deflate), _CERTIFICATE, _CLIENT_CERTIFICATE and _CLIENT_KEY;
    up to six attempts within the timeout on 429, 502, 503, 504 and connection errors, waiting
    2^n seconds with 20% jitter or what Retry-After says; a request larger than
    `max_request_size` before compression (64 MiB; 0 for no limit) is dropped, not sent.
    setup_telemetry uses the SDK's exporter where this one has no equivalent (a credential
    provider session, or the SDK's internal metrics).
    """

    def __init__(
        self,
        config: OTLPHTTPConfig | None = None,
        *,
        endpoint: str | None = None,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    ) -> None:
        config = config or OTLPHTTPConfig.from_env()
        if endpoint is not None:
            config = replace(config, endpoint=endpoint)
        self.config = config
        self.max_request_size = max_request_size
        self._headers = config.request_headers()
        # Plain HTTP never uses TLS: no CA bundle to load (tens of ms at start-up) for it.
        tls = config.ssl_context() if config.endpoint.lower().startswith("https:") else False
        self._client = httpx.Client(verify=tls, timeout=config.timeout)
        self._stopping = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopping.is_set():
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        try:
            payload = encode_spans(spans)
        except Exception:
            _logger.exception("failed to encode a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        if 0 < self.max_request_size < len(payload):
            _logger.warning(
                "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                len(payload),
                self.max_request_size,
            )
            return SpanExportResult.FAILURE
        return self._send(_compress(payload, self.config.compression))

    def _post(self, body: bytes, timeout: float) -> httpx.Response:
        return self._client.post(self.config.endpoint, content=body, headers=self._headers, timeout=timeout)

    def _send(self, body: bytes) -> SpanExportResult:
        deadline = time.monotonic() + self.config.timeout
        for attempt in range(_MAX_ATTEMPTS):
            backoff = 2**attempt * random.uniform(1 - _JITTER, 1 + _JITTER)
            failure: object
            try:
                try:
                    response = self._post(body, max(deadline - time.monotonic(), 0.0))
                except _CONNECTION_ERRORS:
                    # Once more at once: usually a pooled connection the collector had closed.
                    if deadline - time.monotonic() <= 0:
                        raise
                    response = self._post(body, deadline - time.monotonic())
            except _CONNECTION_ERRORS as error:
                failure, retryable = error, True
            except Exception as error:  # as the SDK's: anything else is final
                failure, retryable = error, False
            else:
                if response.status_code < 400:
                    return SpanExportResult.SUCCESS
                failure = f"{response.status_code} {response.reason_phrase}"
                retryable = response.status_code in _RETRYABLE_STATUS
                if retryable and (wait := _retry_after(response)) is not None:
                    backoff = wait
            if not retryable:
                _logger.error("Failed to export spans batch: %s", failure)
                return SpanExportResult.FAILURE
            if (
                attempt + 1 == _MAX_ATTEMPTS
                or backoff > deadline - time.monotonic()
                or self._stopping.is_set()
            ):
                _logger.error(
                    "Failed to export spans batch due to timeout, max retries or shutdown: %s", failure
                )
                return SpanExportResult.FAILURE
            _logger.warning(
                "Transient error %s encountered while exporting spans batch, retrying in %.2fs.",
                failure,
                backoff,
            )
            if self._stopping.wait(backoff):
                _logger.warning("Shutdown in progress, aborting retry.")
                break
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if self._stopping.is_set():
            _logger.warning("Exporter already shutdown, ignoring call")
            return
        self._stopping.set()
        self._client.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True
