"""The stock instrumentations of the libraries every service talks through: httpx (calls to other
services), SQLAlchemy (each service's SQL) and redis (the gateway's rate limiter).

Each instrumentor is a process-wide singleton that does nothing when already instrumented, so
calling this again, or under opentelemetry-instrument, adds no second span. The one exception is
httpx: Lantern re-instruments it with its hooks, which name the upstream and count resends.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_RESEND_COUNT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL

if TYPE_CHECKING:
    from opentelemetry.instrumentation.httpx import RequestInfo
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider


# Request extensions UpstreamClient sets on each attempt, read by the hooks below.
UPSTREAM = "lantern.upstream"
ATTEMPT = "lantern.attempt"
BREAKER = "lantern.circuit_breaker"
UPSTREAM_NAME = "lantern.upstream.name"
BREAKER_STATE = "lantern.circuit_breaker.state"


def redacted(url: str) -> str:
    """`url` as scheme://host:port/path: no user info (credentials), no query (tokens, personal
    data), no fragment. The conventions allow redacting url.full; these parts are never needed
    to read a trace."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


async def _on_request(span: Span, request: RequestInfo) -> None:
    if not span.is_recording():
        return
    span.set_attribute(URL_FULL, redacted(str(request.url)))
    extensions = request.extensions or {}
    if upstream := extensions.get(UPSTREAM):
        span.set_attribute(UPSTREAM_NAME, upstream)
    if (attempt := extensions.get(ATTEMPT, 1)) > 1:
        span.set_attribute(HTTP_REQUEST_RESEND_COUNT, attempt - 1)
    if state := extensions.get(BREAKER):
        span.set_attribute(BREAKER_STATE, state)


def use_stable_http_conventions() -> None:
    """The HTTP instrumentations emit the stable HTTP conventions only when asked to, and read
    the setting once, when the first of them is instrumented."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")


def instrument_libraries(tracer_provider: TracerProvider, meter_provider: MeterProvider | None) -> None:
    use_stable_http_conventions()
    _instrument_httpx(tracer_provider, meter_provider)
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Its package declares SQLAlchemy below 2.1, so its own dependency check (and so
    # opentelemetry-instrument) skips 2.1; tests/integration/test_database_spans.py shows its
    # spans on the 2.1 Lantern runs. It wraps create_engine and create_async_engine: engines made
    # after this (storage.create_engine looks the function up when called) are traced.
    SQLAlchemyInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True
    )
    if importlib.util.find_spec("redis") is not None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument(tracer_provider=tracer_provider)


def _instrument_httpx(tracer_provider: TracerProvider, meter_provider: MeterProvider | None) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        # By opentelemetry-instrument, without Lantern's hooks: once more, with them.
        instrumentor.uninstrument()
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, async_request_hook=_on_request
    )
