"""CLIENT spans for the runtime's calls to other services (UpstreamClient's attempts).

They replace opentelemetry-instrumentation-httpx, which wraps every httpx transport in the
process and, per request, parses the URL again, calls hooks and records its metrics with
attributes built from scratch. Here the server's address is known once per upstream, and a
span carries what the trace needs: method, URL, status, the resend count and the breaker's
state. Without an SDK tracer provider, the caller's context is still injected.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from lantern_runtime.telemetry.server import DURATION_BUCKETS, method_attributes, span_method
from lantern_runtime.telemetry.tracer import GlobalTracer

if TYPE_CHECKING:
    from collections.abc import MutableMapping

_SCOPE = "lantern_runtime.http"
BREAKER_STATE = "lantern.circuit_breaker.state"


class _Instruments:
    """The tracer of the global provider, and the histogram of the global meter provider,
    looked up again only when that changes."""

    def __init__(self) -> None:
        self._tracer = GlobalTracer(_SCOPE)
        self._meter_provider: object = None
        self.tracer: trace.Tracer | None = None
        self.duration: metrics.Histogram | None = None

    def refresh(self) -> None:
        self.tracer = self._tracer.get()
        meter_provider = metrics.get_meter_provider()
        if meter_provider is self._meter_provider:
            return
        self._meter_provider = meter_provider
        self.duration = meter_provider.get_meter(_SCOPE).create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )


_instruments = _Instruments()


def redacted(url: str) -> str:
    """`url` as scheme://host:port/path: no user info (credentials), no query (tokens, personal
    data), no fragment. The conventions allow redacting url.full; these parts are never needed
    to read a trace."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ClientCall:
    """One attempt of a call: `start` injects the context into the headers, `end` records
    the answer (a status code) or the error."""

    def __init__(self, server: tuple[str, int], method: str, url: str, attempt: int) -> None:
        method_fields = method_attributes(method)
        # The metric's attributes: bounded, so the original of an unknown method is the span's only.
        self.attributes: dict[str, Any] = {
            "http.request.method": method_fields.pop("http.request.method"),
            "server.address": server[0],
            "server.port": server[1],
        }
        self.span_only: dict[str, Any] = {**method_fields, "url.full": redacted(url)}
        self.attempt = attempt
        self.span: trace.Span | None = None
        self.started = 0.0

    def start(self, headers: MutableMapping[str, str], breaker_state: str) -> None:
        _instruments.refresh()
        self.started = perf_counter()
        if _instruments.tracer is None:
            propagate.inject(headers)
            return
        attributes = {**self.attributes, **self.span_only, BREAKER_STATE: breaker_state}
        if self.attempt > 1:
            attributes["http.request.resend_count"] = self.attempt - 1
        self.span = _instruments.tracer.start_span(
            span_method(self.attributes), kind=SpanKind.CLIENT, attributes=attributes
        )
        propagate.inject(headers, context=trace.set_span_in_context(self.span))

    def end(self, *, status: int | None = None, error: BaseException | None = None) -> None:
        outcome: dict[str, Any] = {}
        if status is not None:
            outcome["http.response.status_code"] = status
        failed = error is not None or status is None or status >= 400
        if failed:
            outcome["error.type"] = type(error).__qualname__ if error is not None else str(status)
        if _instruments.duration is not None:
            _instruments.duration.record(perf_counter() - self.started, {**self.attributes, **outcome})
        if self.span is not None:
            self.span.set_attributes(outcome)
            if failed:
                if isinstance(error, Exception):
                    self.span.record_exception(error)
                self.span.set_status(StatusCode.ERROR)
            self.span.end()
