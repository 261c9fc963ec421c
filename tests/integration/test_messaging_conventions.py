"""Messaging spans and metrics on the semantic conventions, on the real broker: operation name and
type, destinations named for where a message goes (so a retry is not named for its event), the
broker's address, error.type on every failed process (also when the delivery policy retries
instead of raising), and the conventions' four messaging metrics with the same attributes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from lantern_runtime.messaging import EventPublisher
from tests.integration.test_messaging import QUEUE, WidgetMade, running, wait_for  # noqa: F401 - fixture
from tests.metric_points import PointTotals, point_totals

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lantern_runtime.messaging import Delivery

pytestmark = pytest.mark.rabbitmq

PUBLISH = "publish lantern.events:widget.made"
PROCESS = f"process lantern.events:widget.made:{QUEUE.name}"
RETRY = f"publish lantern.redeliveries:{QUEUE.retry_name}"
# The retried copy comes back from the retry queue through the default exchange, routed by the
# queue's name: the conventions leave out the empty exchange and the repeated queue.
REPROCESS = f"process {QUEUE.name}"


def of_destinations(points: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [p for p in points if p.get("messaging.destination.name") in names]


def grown(before: PointTotals, after: PointTotals) -> list[dict[str, Any]]:
    return [dict(key) for key, total in after.items() if total > before.get(key, 0)]


async def test_a_retried_message_is_named_for_where_each_copy_goes_with_errors_typed(
    running: Callable[..., object],  # noqa: F811 - the fixture
    spans: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    attempts: list[int] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if len(attempts) < 2:
            raise ConnectionError("upstream flaked")

    broker = await running(handle)  # type: ignore[operator]
    names = (
        "messaging.process.duration",
        "messaging.client.consumed.messages",
        "messaging.client.sent.messages",
        "messaging.client.operation.duration",
    )
    before = {name: point_totals(metric_reader, name) for name in names}
    await EventPublisher(broker).publish(WidgetMade(widget_id="w-9"), message_id="m-9")  # type: ignore[arg-type]
    await wait_for(lambda: attempts == [1, 2])
    await asyncio.sleep(0.2)
    finished = spans.get_finished_spans()
    messaging = [s for s in finished if s.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER)]
    assert sorted(s.name for s in messaging) == sorted([PUBLISH, PROCESS, RETRY, REPROCESS])
    by_name: dict[str, list[Any]] = {}
    for span in messaging:
        by_name.setdefault(span.name, []).append(span)
    [publish] = by_name[PUBLISH]
    [retry] = by_name[RETRY]
    [first], [second] = by_name[PROCESS], by_name[REPROCESS]
    sent = dict(publish.attributes or {})
    assert {k: sent[k] for k in ("messaging.operation.name", "messaging.operation.type")} == {
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
    }
    assert sent["messaging.system"] == "rabbitmq"
    assert sent["messaging.destination.name"] == "lantern.events:widget.made"
    assert sent["messaging.rabbitmq.destination.routing_key"] == "widget.made"
    assert sent["messaging.message.id"] == "m-9"
    assert sent["server.address"] in ("localhost", "127.0.0.1") and sent["server.port"] == 5672
    assert "messaging.operation" not in sent
    assert not any(
        key.startswith("messaging.rabbitmq.")
        and key
        not in (
            "messaging.rabbitmq.destination.routing_key",
            "messaging.rabbitmq.message.delivery_tag",
        )
        for s in messaging
        for key in (s.attributes or {})
    )
    # The retry is a publish to the retry queue, in the failed attempt's trace.
    assert retry.parent is not None and retry.parent.span_id == first.context.span_id
    assert (retry.attributes or {})["messaging.rabbitmq.destination.routing_key"] == QUEUE.retry_name
    failed, applied = dict(first.attributes or {}), dict(second.attributes or {})
    assert failed["messaging.operation.type"] == "process"
    assert failed["error.type"] == "ConnectionError"
    assert first.status.status_code is StatusCode.ERROR
    assert "error.type" not in applied and second.status.status_code is StatusCode.UNSET
    assert isinstance(applied["messaging.rabbitmq.message.delivery_tag"], int)
    assert first.parent is not None and first.parent.span_id == publish.context.span_id

    destinations = tuple(name.split(" ", 1)[1] for name in (PUBLISH, PROCESS, RETRY, REPROCESS))
    added = {name: grown(before[name], point_totals(metric_reader, name)) for name in names}
    processed = of_destinations(added["messaging.process.duration"], *destinations)
    assert {p.get("error.type") for p in processed} == {"ConnectionError", None}
    assert all(p["messaging.operation.name"] == "process" for p in processed)
    consumed = of_destinations(added["messaging.client.consumed.messages"], *destinations)
    assert consumed and all(p["messaging.system"] == "rabbitmq" for p in consumed)
    published = of_destinations(added["messaging.client.sent.messages"], *destinations)
    assert {p["messaging.destination.name"] for p in published} >= {
        "lantern.events:widget.made",
        RETRY.split(" ", 1)[1],
    }
    operations = of_destinations(added["messaging.client.operation.duration"], *destinations)
    assert {p["messaging.operation.type"] for p in operations} == {"send"}
