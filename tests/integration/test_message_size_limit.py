"""A message over BROKER_MAX_MESSAGE_BYTES is refused before it is sent, with its size and the
limit, and the outbox relay parks such a row (logged, retried only after a long lease) instead
of retrying it on every pass or holding back the rows after it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

import pytest
from sqlalchemy import MetaData, select

from lantern_runtime.messaging import EventPublisher, build_broker, event_publisher, start_broker
from lantern_runtime.messaging.publisher import Event
from lantern_runtime.settings import BrokerSettings
from lantern_runtime.storage import OutboxRelay, add_to_outbox, outbox_table
from order_flow.topology import ORDER_FLOW, PAYMENTS_QUEUE
from tests.integration.conftest import drain, engine_with

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from faststream.rabbit import RabbitBroker

pytestmark = pytest.mark.rabbitmq

LIMIT = 4096


class OrderCreatedWithNote(Event):
    """order.created, as the queue of payments takes it, with a body of any size."""

    event_type: ClassVar[str] = "order.created"
    order_id: str
    note: str = ""


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[RabbitBroker]:
    settings = BrokerSettings(amqp_url=amqp_url, broker_max_message_bytes=LIMIT)
    started = build_broker(settings, "orders")
    event_publisher(started, OrderCreatedWithNote)
    await start_broker(started, ORDER_FLOW, settings)
    yield started
    await started.stop()


async def test_an_oversized_outbox_row_is_parked_and_logged_and_the_rows_after_it_are_sent(
    amqp_url: str, broker: RabbitBroker, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = MetaData()
    outbox = outbox_table(metadata)
    events = {
        "small-1": OrderCreatedWithNote(order_id="small-1"),
        "huge": OrderCreatedWithNote(order_id="huge", note="x" * LIMIT),
        "small-2": OrderCreatedWithNote(order_id="small-2"),
    }
    async with engine_with(database_url, metadata) as engine:
        async with engine.begin() as conn:
            for message_id, event in events.items():
                await add_to_outbox(conn, outbox, event, message_id=message_id, correlation_id="c")
        publishers = list(broker.publishers)
        relay = OutboxRelay(
            engine,
            outbox,
            EventPublisher(broker, publishers=publishers),  # type: ignore[arg-type]
            poll_seconds=0.1,
        )
        with caplog.at_level(logging.ERROR, logger="lantern_runtime.storage.outbox"):
            assert await relay.publish_pending() == 3
        [parked] = [r for r in caplog.records if r.getMessage() == "outbox row too large to publish; parked"]
        assert (parked.message_id, parked.limit) == ("huge", LIMIT)  # type: ignore[attr-defined]
        assert parked.size > LIMIT  # type: ignore[attr-defined]
        assert f"over the broker's limit of {LIMIT} bytes" in parked.error  # type: ignore[attr-defined]

        arrived = await drain(amqp_url, PAYMENTS_QUEUE.name, expect=2)
        assert [m.message_id for m in arrived] == ["small-1", "small-2"]
        async with engine.connect() as conn:
            rows = {
                row.message_id: row
                for row in await conn.execute(
                    select(outbox.c.message_id, outbox.c.sent_at, outbox.c.claimed_until)
                )
            }
        assert rows["huge"].sent_at is None
        claimed_until = rows["huge"].claimed_until.replace(tzinfo=rows["huge"].claimed_until.tzinfo or UTC)
        assert claimed_until > datetime.now(UTC) + timedelta(minutes=50)
        # The next passes leave it alone: no retry loop on a row that cannot be sent.
        caplog.clear()
        assert await relay.publish_pending() == 0
        assert not caplog.records
