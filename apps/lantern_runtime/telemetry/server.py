"""One SERVER span per HTTP request, from a plain ASGI middleware.

The alternative to opentelemetry-instrumentation-fastapi (LANTERN_HTTP_INSTRUMENTATION picks
one), which finds the route by matching every route again, builds its attributes from parsed
URLs and headers, wraps each ASGI message, and records several metrics. This one extracts the
context from the propagators' own headers only, starts a lean span with the stable HTTP
semantic-convention attributes, takes the route FastAPI has already matched, and records one
duration histogram. What each costs is in the README's Performance section.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind, StatusCode

from lantern_runtime.telemetry.propagation import extract

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping

    from opentelemetry.metrics import MeterProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SCOPE = "lantern_runtime.http"
# The semantic conventions' advisory buckets for HTTP request durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# RFC 9110's methods and PATCH, matched exactly (methods are case-sensitive). Any other is
# `_OTHER`, so what a client sends cannot grow span names or metric series without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"


def method_attributes(method: str) -> dict[str, str]:
    """`http.request.method` as the HTTP semantic conventions bound it, with
    `http.request.method_original` when the method is not a known one."""
    if method in KNOWN_METHODS:
        return {"http.request.method": method}
    return {"http.request.method": OTHER_METHOD, "http.request.method_original": method}


def span_method(attributes: dict[str, Any]) -> str:
    """The `{method}` of a span name: the known method, or HTTP for `_OTHER`, as the
    conventions say."""
    method: str = attributes["http.request.method"]
    return "HTTP" if method == OTHER_METHOD else method


class _HeaderListSetter(Setter[list[tuple[bytes, bytes]]]):
    def set(self, carrier: list[tuple[bytes, bytes]], key: str, value: str) -> None:
        carrier.append((key.lower().encode("latin-1"), value.encode("latin-1")))


_SET_HEADER = _HeaderListSetter()


class ServerSpans:
    """ASGI middleware: a SERVER span around each HTTP request whose path is not excluded."""

    SCOPE = _SCOPE

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: trace.Tracer,
        meter_provider: MeterProvider,
        excluded_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.duration = meter_provider.get_meter(_SCOPE).create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.excluded = frozenset(excluded_paths)
        self._fields: tuple[object, frozenset[bytes]] | None = None

    def _propagator_fields(self) -> frozenset[bytes]:
        textmap = propagate.get_global_textmap()
        if self._fields is None or self._fields[0] is not textmap:
            self._fields = (textmap, frozenset(name.lower().encode("latin-1") for name in textmap.fields))
        return self._fields[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded:
            await self.app(scope, receive, send)
            return
        # The propagators read only their own headers (traceparent, tracestate, baggage, …);
        # ASGI gives header names in lower case.
        fields = self._propagator_fields()
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in fields
        }
        parent = extract(carrier)
        attributes: dict[str, Any] = {
            **method_attributes(scope["method"]),
            "url.scheme": scope.get("scheme", "http"),
            "url.path": scope["path"],
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if server := scope.get("server"):
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client := scope.get("client"):
            attributes["client.address"] = client[0]
        span = self.tracer.start_span(
            span_method(attributes), context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        status: int | None = None
        started = perf_counter()

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                propagator = get_global_response_propagator()  # type: ignore[no-untyped-call]
                if propagator is not None:
                    headers = list(message.get("headers", ()))
                    propagator.inject(headers, setter=_SET_HEADER)
                    message = {**message, "headers": headers}
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as error:
            failure = error
            raise
        finally:
            self._finish(span, scope, attributes, status, failure, perf_counter() - started)
            context.detach(token)

    def _finish(
        self,
        span: trace.Span,
        scope: MutableMapping[str, Any],
        attributes: dict[str, Any],
        status: int | None,
        failure: BaseException | None,
        seconds: float,
    ) -> None:
        end: dict[str, Any] = {}
        # FastAPI leaves the matched route in the scope; its template names the span.
        route = getattr(scope.get("route"), "path", None)
        if route:
            end["http.route"] = route
            span.update_name(f"{span_method(attributes)} {route}")
        if status is not None:
            end["http.response.status_code"] = status
        if failure is not None or status is None or status >= 500:
            end["error.type"] = type(failure).__qualname__ if failure else str(status or "incomplete")
            if isinstance(failure, Exception):
                span.record_exception(failure)
            span.set_status(StatusCode.ERROR)
        span.set_attributes(end)
        span.end()
        metric = {
            key: attributes[key] for key in ("http.request.method", "url.scheme", "network.protocol.version")
        }
        metric.update(end)
        self.duration.record(seconds, metric)
