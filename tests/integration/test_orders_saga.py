"""orders' outbox relay and payment deadline against real engines and the real broker."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from sqlalchemy import select

from lantern_runtime.messaging import EventPublisher, build_broker
from lantern_runtime.settings import BrokerSettings
from lantern_runtime.storage import OutboxRelay
from order_flow.topology import PAYMENTS_QUEUE
from orders.domain import PlaceOrder
from orders.repository import OrderRepository
from orders.tables import metadata, outbox
from tests.integration.conftest import drain, engine_with

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.rabbitmq

ORDER = PlaceOrder.model_validate({"items": [{"sku": "lamp", "quantity": 1, "unit_price": "5.00"}]})


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database_url, metadata) as engine:
        yield engine


async def outbox_rows(engine: AsyncEngine) -> list[tuple[str, bool]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
    return [(row.message_id, row.sent_at is not None) for row in rows]


async def test_the_relay_publishes_committed_events_in_their_trace_and_marks_them_sent(
    engine: AsyncEngine, amqp_url: str, spans: InMemorySpanExporter
) -> None:
    repository = OrderRepository(engine)
    with trace.get_tracer("test").start_as_current_span("POST /api/orders") as request_span:
        order, _ = await repository.place("c-1", ORDER, "key-1")
    # The amqp_url fixture declared the order flow's topology, as the chart's topology step does.
    broker = build_broker(BrokerSettings(amqp_url=amqp_url), "orders")
    await broker.connect()
    try:
        relay = OutboxRelay(engine, outbox, EventPublisher(broker), poll_seconds=60)
        assert await relay.publish_pending() == 1
        assert await relay.publish_pending() == 0
    finally:
        await broker.stop()
    [message] = await drain(amqp_url, PAYMENTS_QUEUE.name, expect=1)
    assert message.message_id == f"{order.id}:order.created"
    trace_id = format(request_span.get_span_context().trace_id, "032x")
    assert str(message.headers["traceparent"]).split("-")[1] == trace_id
    assert await outbox_rows(engine) == [(f"{order.id}:order.created", True)]


async def test_events_the_broker_does_not_take_stay_unsent_and_are_not_held(engine: AsyncEngine) -> None:
    repository = OrderRepository(engine)
    await repository.place("c-1", ORDER, "key-2")
    # Nothing listens here: the publish fails, as during a broker outage.
    broker = build_broker(BrokerSettings(amqp_url="amqp://guest:guest@127.0.0.1:9/"), "orders")
    relay = OutboxRelay(engine, outbox, EventPublisher(broker, timeout=0.5), poll_seconds=60)
    with pytest.raises(Exception, match="was not published"):
        await relay.publish_pending()
    assert [sent for _, sent in await outbox_rows(engine)] == [False]
    # The claim was released, so the row is due again at once; and the API can still write.
    with pytest.raises(Exception, match="was not published"):
        await relay.publish_pending()
    await repository.place("c-2", ORDER, "key-3")


async def test_the_payment_deadline_cancels_pending_orders_once_with_their_event(engine: AsyncEngine) -> None:
    repository = OrderRepository(engine)
    order, _ = await repository.place("c-1", ORDER, "key-4")
    assert await repository.cancel_overdue(timedelta(hours=1)) == []
    [cancelled] = await repository.cancel_overdue(timedelta(0))
    assert cancelled.id == order.id
    assert cancelled.status.value == "cancelled"
    assert "payment not settled" in (cancelled.status_reason or "")
    assert await repository.cancel_overdue(timedelta(0)) == []
    stored = await repository.get(order.id)
    assert stored is not None
    assert stored.status.value == "cancelled"
    assert [m for m, _ in await outbox_rows(engine)] == [
        f"{order.id}:order.created",
        f"{order.id}:order.cancelled",
    ]
