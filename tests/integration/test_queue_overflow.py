"""Work and delay queues on the real broker: they dead-letter at least once, and a full queue
refuses publishes (`reject-publish`) instead of dropping what it holds; the publisher sees the
refusal and the outbox keeps the refused rows until the broker takes them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from sqlalchemy import MetaData, select

from lantern_runtime.messaging import (
    EventPublisher,
    PublishFailed,
    QueueSpec,
    Topology,
    build_broker,
    connect_broker,
    declare_topology,
)
from lantern_runtime.messaging.publisher import Event
from lantern_runtime.messaging.topology import MAX_QUEUE_LENGTH
from lantern_runtime.settings import BrokerSettings
from lantern_runtime.storage import OutboxRelay, add_to_outbox, outbox_table
from tests.integration.conftest import engine_with, queue_depth, queues_in

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from faststream.rabbit import RabbitBroker
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.rabbitmq

# Small enough to fill in a test; RabbitMQ may take one or two past it before it refuses.
SMALL = QueueSpec("tests.gadgets", ("gadget.made",), max_length=3)


class GadgetMade(Event):
    event_type: ClassVar[str] = "gadget.made"
    gadget_id: str


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[RabbitBroker]:
    """Connected, with SMALL declared as the topology step declares it; nothing consumes."""
    await declare_topology(amqp_url, Topology((SMALL,)))
    connected = build_broker(BrokerSettings(amqp_url=amqp_url), "tests")
    await connect_broker(connected, Topology((SMALL,)))
    yield connected
    await connected.stop()


async def take_all(amqp_url: str, queue: str) -> list[str]:
    """Every message id in `queue`, in order, taking (and acking) them."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=False)
        taken = []
        while (message := await declared.get(fail=False)) is not None:
            await message.ack()
            taken.append(message.message_id or "")
        return taken


async def test_work_and_delay_queues_dead_letter_at_least_once_and_refuse_when_full(
    amqp_url: str, broker: RabbitBroker
) -> None:
    queues = queues_in(amqp_url)
    for name in (SMALL.name, SMALL.retry_name):
        arguments = queues[name]["arguments"]
        assert queues[name]["type"] == "quorum", name
        assert arguments["x-dead-letter-strategy"] == "at-least-once", name
        # RabbitMQ falls back to at-most-once under any other overflow.
        assert arguments["x-overflow"] == "reject-publish", name
        assert arguments["x-max-length"] == SMALL.max_length, name
    # The dead queue stays a classic queue without limits: nothing in it is refused or dropped.
    dead = queues[SMALL.dead_name]
    assert dead["type"] == "classic"
    assert not {"x-overflow", "x-max-length", "x-max-length-bytes"} & set(dead["arguments"])
    assert QueueSpec("any", ("any",)).max_length == MAX_QUEUE_LENGTH


async def test_a_full_queue_refuses_the_publisher_with_a_nack_and_drops_nothing(
    amqp_url: str, broker: RabbitBroker
) -> None:
    publisher = EventPublisher(broker)  # type: ignore[arg-type]
    accepted: list[str] = []
    refusals: dict[str, str] = {}
    for n in range(SMALL.max_length + 7):
        message_id = f"gadget-{n}"
        try:
            await publisher.publish(GadgetMade(gadget_id=message_id), message_id=message_id)
        except PublishFailed as error:
            refusals[message_id] = str(error)
        else:
            accepted.append(message_id)
    assert refusals, f"{SMALL.name} took all {len(accepted)} messages past its limit of {SMALL.max_length}"
    # The broker's nack, named in the error the caller gets, with the message it refused.
    for message_id, error in refusals.items():
        assert f"gadget.made {message_id} was not published" in error
        assert "Nack" in error, error
    # reject-publish may overshoot by what is in flight; here one publish at a time.
    assert SMALL.max_length <= len(accepted) <= SMALL.max_length + 2
    # Every confirmed message is there, oldest first (drop-head would have dropped the head),
    # and none of the refused ones.
    assert await take_all(amqp_url, SMALL.name) == accepted
    # With room again, the same publish is taken.
    refused = next(iter(refusals))
    await publisher.publish(GadgetMade(gadget_id=refused), message_id=refused)
    assert await take_all(amqp_url, SMALL.name) == [refused]


async def outbox_rows(engine: AsyncEngine, outbox: Table) -> dict[str, tuple[bool, bool]]:
    """message id -> (sent, claimed), in id order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.message_id, outbox.c.sent_at, outbox.c.claimed_until).order_by(outbox.c.id)
        )
        return {row.message_id: (row.sent_at is not None, row.claimed_until is not None) for row in rows}


async def test_the_outbox_keeps_what_a_full_queue_refuses_and_sends_it_once_there_is_room(
    amqp_url: str, broker: RabbitBroker, database_url: str
) -> None:
    metadata = MetaData()
    outbox = outbox_table(metadata)
    ids = [f"outboxed-{n}" for n in range(SMALL.max_length + 5)]
    async with engine_with(database_url, metadata) as engine:
        async with engine.begin() as conn:
            for message_id in ids:
                await add_to_outbox(
                    conn, outbox, GadgetMade(gadget_id=message_id), message_id=message_id, correlation_id="c"
                )
        relay = OutboxRelay(engine, outbox, EventPublisher(broker), poll_seconds=0.1)  # type: ignore[arg-type]

        # One pass: the rows the queue took are sent; at the first refusal the pass stops and
        # the rest stay unsent and unclaimed, for the next pass to try again at once.
        with pytest.raises(PublishFailed, match="Nack"):
            await relay.publish_pending()
        rows = await outbox_rows(engine, outbox)
        taken = [message_id for message_id, (sent, _) in rows.items() if sent]
        assert SMALL.max_length <= len(taken) < len(ids)
        assert taken == ids[: len(taken)]
        assert all(rows[message_id] == (False, False) for message_id in ids[len(taken) :])
        assert await queue_depth(amqp_url, SMALL.name) == len(taken)

        # The relay keeps retrying while the queue is full; a consumer making room lets it finish.
        relay.start()
        try:
            delivered: list[str] = []
            async with asyncio.timeout(30):
                while len(delivered) < len(ids):
                    delivered += await take_all(amqp_url, SMALL.name)
                    await asyncio.sleep(0.05)
                # Polled: the relay has no event to await, its rows are the state.
                while not all(sent for sent, _ in (await outbox_rows(engine, outbox)).values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await relay.stop()
        # Each once, in the order written: a refused publish was not enqueued, and nothing dropped.
        assert delivered == ids


async def test_a_queue_declared_before_at_least_once_refuses_the_new_arguments_naming_one(
    amqp_url: str,
) -> None:
    """Queue arguments cannot change: a deployment upgraded in place fails its declare (and so its
    start-up) until the old work and delay queues have been emptied and deleted."""
    spec = QueueSpec("tests.upgraded", ("gizmo.made",))
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        # The work queue as the topology declared it until at-least-once dead-lettering.
        await channel.declare_queue(
            spec.name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 20,
                "x-dead-letter-exchange": "lantern.dead-letters",
                "x-dead-letter-routing-key": spec.name,
            },
        )
    with pytest.raises(ChannelPreconditionFailed, match="inequivalent arg 'x-dead-letter-strategy'"):
        await declare_topology(amqp_url, Topology((spec,)))
