"""Histogram exemplars as the chart configures them (OTEL_METRICS_EXEMPLAR_FILTER=trace_based):
a request handled in a sampled trace leaves that trace's id on the duration histogram's point,
read by the SDK's own metric reader; an unsampled one leaves none."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import Exemplar
    from opentelemetry.sdk.trace.sampling import Sampler


def order_app() -> FastAPI:
    app = FastAPI()

    @app.get("/api/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "status": "confirmed"}

    return app


async def handle_one_request(
    monkeypatch: pytest.MonkeyPatch, sampler: Sampler
) -> tuple[list[Exemplar], InMemorySpanExporter]:
    """One GET through the stock FastAPI instrumentation, as the services are instrumented;
    the exemplars on its duration histogram, and the spans it made."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    # No exemplar_filter argument: the provider takes it from the variable, as setup_telemetry's does.
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    app = order_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orders") as client:
        assert (await client.get("/api/orders/o-1")).status_code == 200
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "http.server.request.duration"
        for point in metric.data.data_points
    ]
    assert len(points) == 1, points
    [point] = points
    assert isinstance(point, HistogramDataPoint)
    return list(point.exemplars), spans


async def test_a_sampled_request_leaves_its_trace_id_on_the_duration_histogram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exemplars, spans = await handle_one_request(monkeypatch, ALWAYS_ON)
    [server] = [span for span in spans.get_finished_spans() if span.name == "GET /api/orders/{order_id}"]
    assert server.context is not None
    assert [exemplar.trace_id for exemplar in exemplars] == [server.context.trace_id]
    assert exemplars[0].span_id == server.context.span_id
    # The exemplar's value is the measurement itself: the request's duration in seconds.
    assert 0 < exemplars[0].value < 5


async def test_an_unsampled_request_leaves_no_exemplar(monkeypatch: pytest.MonkeyPatch) -> None:
    exemplars, spans = await handle_one_request(monkeypatch, ALWAYS_OFF)
    assert spans.get_finished_spans() == ()
    assert exemplars == []
