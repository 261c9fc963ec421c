"""Server spans from opentelemetry-instrumentation-fastapi: one per request, in the caller's
trace, named by the route, on the stable HTTP conventions, probes excluded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.instrumentation.propagators import (
    TraceResponsePropagator,
    set_global_response_propagator,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.telemetry import Telemetry
from tests.metric_points import point_attributes

CALLER_TRACE = "94e183f1b16ada326cb26ac1602aaaa4"
CALLER_SPAN = "d543bcb7bc77533d"


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        provider = TracerProvider(resource=Resource.create({"service.name": "orders"}))
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(
            "orders", tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[self.metrics])
        )

    def durations(self) -> list[dict[str, object]]:
        return point_attributes(self.metrics, "http.server.request.duration")


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, Recorded]]:
    set_global_response_propagator(TraceResponsePropagator())
    recorded = Recorded()
    router = APIRouter()

    @router.get("/api/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    @router.get("/api/broken")
    async def broken() -> None:
        raise RuntimeError("the handler failed")

    app: FastAPI = service_app(
        "orders", readiness=Readiness({}), telemetry=recorded.telemetry, routers=[router]
    )
    transport = httpx.ASGITransport(app, raise_app_exceptions=False, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://orders:8000") as client:
        yield client, recorded
    set_global_response_propagator(None)


async def test_a_request_is_one_server_span_in_the_callers_trace_named_by_its_route(
    served: tuple[httpx.AsyncClient, Recorded],
) -> None:
    client, recorded = served
    response = await client.get(
        "/api/items/i-7", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    )
    assert response.status_code == 200
    [span] = recorded.spans.get_finished_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.fastapi"
    assert (span.name, span.kind) == ("GET /api/items/{item_id}", SpanKind.SERVER)
    assert span.parent is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (CALLER_TRACE, CALLER_SPAN)
    # The stable HTTP semantic conventions.
    stable = {
        "http.request.method": "GET",
        "http.route": "/api/items/{item_id}",
        "http.response.status_code": 200,
        "url.scheme": "http",
        "url.path": "/api/items/i-7",
        "network.protocol.version": "1.1",
        "server.port": 8000,
        "client.address": "10.1.2.3",
    }
    attributes = dict(span.attributes or {})
    assert {key: attributes.get(key) for key in stable} == stable
    assert span.status.status_code is StatusCode.UNSET
    assert response.headers["traceresponse"] == f"00-{CALLER_TRACE}-{span.context.span_id:016x}-01"
    [duration] = recorded.durations()
    assert {key: duration.get(key) for key in ("http.request.method", "http.route")} == {
        "http.request.method": "GET",
        "http.route": "/api/items/{item_id}",
    }


async def test_an_unhandled_error_is_a_500_and_an_error_span_with_the_exception(
    served: tuple[httpx.AsyncClient, Recorded],
) -> None:
    client, recorded = served
    response = await client.get("/api/broken")
    assert response.status_code == 500
    [span] = recorded.spans.get_finished_spans()
    assert span.parent is None
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert "error.type" in span.attributes
    assert [event.name for event in span.events] == ["exception"]
    assert "the handler failed" in str((span.events[0].attributes or {})["exception.message"])


async def test_probes_and_unknown_paths_make_no_route_named_spans(
    served: tuple[httpx.AsyncClient, Recorded],
) -> None:
    client, recorded = served
    assert (await client.get("/healthz")).status_code == 200
    assert recorded.spans.get_finished_spans() == ()
    assert (await client.get("/nowhere")).status_code == 404
    [span] = recorded.spans.get_finished_spans()
    assert span.name == "GET"
    assert span.attributes is not None
    assert "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404
    assert span.status.status_code is StatusCode.UNSET


async def test_the_stock_instrumentation_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "/api/items/private")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-request-id")
    recorded = Recorded()
    router = APIRouter()

    @router.get("/api/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    app = service_app("orders", readiness=Readiness({}), telemetry=recorded.telemetry, routers=[router])
    transport = httpx.ASGITransport(app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://orders:8000") as client:
        assert (await client.get("/api/items/private")).status_code == 200
        assert (await client.get("/api/items/i-7", headers={"X-Request-ID": "req-1"})).status_code == 200
        # Excluded by the variable instead of the probes: now the probes are traced.
        assert (await client.get("/healthz")).status_code == 200
    spans = recorded.spans.get_finished_spans()
    assert [span.name for span in spans] == ["GET /api/items/{item_id}", "GET /healthz"]
    assert (spans[0].attributes or {})["http.request.header.x_request_id"] == ("req-1",)
