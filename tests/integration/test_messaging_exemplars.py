"""Exemplars on the messaging histograms, on the real broker: a message published in a sampled
trace leaves that trace's id on messaging.client.operation.duration (the publish) and
messaging.process.duration (its processing), as the SDK's own reader holds them."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.trace import SpanKind

from lantern_runtime.messaging import EventPublisher
from tests.integration.test_messaging import WidgetMade, running, wait_for  # noqa: F401 - fixture

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from faststream.rabbit import RabbitBroker
    from opentelemetry.sdk.metrics import Exemplar
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lantern_runtime.messaging import Delivery

pytestmark = pytest.mark.rabbitmq

# The `running` fixture: starts a broker whose work queue hands each widget to the handler.
StartBroker: TypeAlias = (
    "Callable[[Callable[[WidgetMade, Delivery], Awaitable[None]]], Awaitable[RabbitBroker]]"
)


def exemplars(reader: InMemoryMetricReader) -> dict[str, list[Exemplar]]:
    """The exemplars each histogram took since the reader last collected; collecting empties
    the reservoirs, so one collection answers for all."""
    data = reader.get_metrics_data()
    out: dict[str, list[Exemplar]] = {}
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        out.setdefault(metric.name, []).extend(point.exemplars)
    return out


async def publish_and_handle_in_a_trace(
    start: StartBroker, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> tuple[dict[str, list[Exemplar]], ReadableSpan, ReadableSpan]:
    """One message published inside a sampled request span and handled; the exemplars the
    messaging histograms took, and the message's producer and consumer spans."""
    handled: list[str] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        handled.append(event.widget_id)

    broker = await start(handle)
    # Empties the reservoirs of what other tests left.
    exemplars(reader)
    with trace.get_tracer("test").start_as_current_span("POST /api/widgets") as request:
        await EventPublisher(broker).publish(WidgetMade(widget_id="w-ex"), message_id="m-ex")
    trace_id = request.get_span_context().trace_id

    def of_trace(kind: SpanKind) -> list[ReadableSpan]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.kind == kind and s.context is not None and s.context.trace_id == trace_id
        ]

    # The process point is recorded as the consumer middleware finishes, after the handler.
    await wait_for(lambda: handled == ["w-ex"] and bool(of_trace(SpanKind.CONSUMER)))
    [producer], [consumer] = of_trace(SpanKind.PRODUCER), of_trace(SpanKind.CONSUMER)
    return exemplars(reader), producer, consumer


def ids(found: list[Exemplar]) -> set[tuple[int, int | None]]:
    return {(e.trace_id or 0, e.span_id) for e in found}


async def test_a_message_in_a_sampled_trace_leaves_its_trace_id_on_the_messaging_histograms(
    running: StartBroker,  # noqa: F811 - the fixture
    spans: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    taken, producer, consumer = await publish_and_handle_in_a_trace(running, spans, metric_reader)
    assert producer.context is not None and consumer.context is not None
    trace_id = producer.context.trace_id
    assert ids(taken["messaging.client.operation.duration"]) == {(trace_id, producer.context.span_id)}
    assert {trace_id for trace_id, _ in ids(taken["messaging.process.duration"])} == {trace_id}


async def test_the_process_duration_exemplar_names_the_consumer_span(
    running: StartBroker,  # noqa: F811 - the fixture
    spans: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    taken, _producer, consumer = await publish_and_handle_in_a_trace(running, spans, metric_reader)
    assert consumer.context is not None
    assert ids(taken["messaging.process.duration"]) == {(consumer.context.trace_id, consumer.context.span_id)}
