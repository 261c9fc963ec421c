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

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, StatusCode

from lantern_runtime.telemetry.server import DURATION_BUCKETS
from lantern_runtime.telemetry.tracer import lean_tracer

if TYPE_CHECKING:
    from collections.abc import MutableMapping

_SCOPE = "lantern_runtime.http"
BREAKER_STATE = "lantern.circuit_breaker.state"


class _Instruments:
    """The tracer and histogram of the global providers, looked up again only when those change."""

    def __init__(self) -> None:
        self._providers: tuple[object, object] | None = None
        self.tracer: trace.Tracer | None = None
        self.duration: metrics.Histogram | None = None

    def refresh(self) -> None:
        tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
        if self._providers == (tracer_provider, meter_provider):
            return
        self._providers = (tracer_provider, meter_provider)
        untraced = isinstance(tracer_provider, ProxyTracerProvider | NoOpTracerProvider)
        self.tracer = None if untraced else lean_tracer(tracer_provider, _SCOPE)
        self.duration = meter_provider.get_meter(_SCOPE).create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )


_instruments = _Instruments()


class ClientCall:
    """One attempt of a call: `start` injects the context into the headers, `end` records
    the answer (a status code) or the error."""

    def __init__(self, server: tuple[str, int], method: str, url: str, attempt: int) -> None:
        self.attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": server[0],
            "server.port": server[1],
        }
        self.url = url
        self.attempt = attempt
        self.span: trace.Span | None = None
        self.started = 0.0

    def start(self, headers: MutableMapping[str, str], breaker_state: str) -> None:
        _instruments.refresh()
        self.started = perf_counter()
        if _instruments.tracer is None:
            propagate.inject(headers)
            return
        attributes = {**self.attributes, "url.full": self.url, BREAKER_STATE: breaker_state}
        if self.attempt > 1:
            attributes["http.request.resend_count"] = self.attempt - 1
        self.span = _instruments.tracer.start_span(
            self.attributes["http.request.method"], kind=SpanKind.CLIENT, attributes=attributes
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
