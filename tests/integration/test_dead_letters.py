"""Dead-letter tooling on the real broker: looking changes nothing, replay moves exactly the
chosen messages once with their trace headers, and a dead queue never drops a message."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from lantern_runtime.messaging import (
    EventPublisher,
    PoisonMessage,
    Topology,
    build_broker,
    deadletters,
    declare_topology,
    event_type,
    start_broker,
    work_queue_subscriber,
)
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER
from tests.integration.conftest import drain, queue_depth, queues_in
from tests.integration.test_messaging import QUEUE, WidgetMade, settings

pytestmark = pytest.mark.rabbitmq

IDS = ("dl-1", "dl-2", "dl-3")


async def refuse(event: WidgetMade) -> None:
    raise PoisonMessage(f"widget {event.widget_id} cannot be made")


@pytest.fixture
async def dead_lettered(amqp_url: str) -> list[deadletters.DeadLetter]:
    """Three messages dead-lettered by a consumer, which is stopped before the test goes on."""
    config = settings(amqp_url)
    broker = build_broker(config, "tests")
    work_queue_subscriber(broker, QUEUE, config)(refuse, filter=event_type(WidgetMade))
    await declare_topology(amqp_url, Topology((QUEUE,)))
    await start_broker(broker, Topology((QUEUE,)), config)
    try:
        for message_id in IDS:
            await EventPublisher(broker).publish(WidgetMade(widget_id=message_id), message_id=message_id)  # type: ignore[arg-type]
        letters: list[deadletters.DeadLetter] = []
        for _ in range(200):
            letters = await deadletters.list_dead_letters(amqp_url, [QUEUE.name])
            if len(letters) == len(IDS):
                break
            await asyncio.sleep(0.05)
    finally:
        await broker.stop()
    assert [letter.message_id for letter in letters] == list(IDS)
    return letters


def as_seen(message: aio_pika.abc.AbstractIncomingMessage) -> tuple[Any, ...]:
    return (message.message_id, message.body, dict(message.headers))


async def test_listing_thirty_times_leaves_every_message_where_it_was_with_the_same_headers(
    amqp_url: str, dead_lettered: list[deadletters.DeadLetter]
) -> None:
    for _ in range(30):
        again = await deadletters.list_dead_letters(amqp_url, [QUEUE.name])
        assert again == dead_lettered
    assert await queue_depth(amqp_url, QUEUE.dead_name) == len(IDS)
    taken = await drain(amqp_url, QUEUE.dead_name, expect=len(IDS), timeout=2)
    for message in taken:
        assert "x-delivery-count" not in message.headers
        assert message.headers["traceparent"]
    assert [as_seen(message) for message in taken] == [
        (letter.message_id, letter.body, letter.headers) for letter in dead_lettered
    ]


async def test_a_dead_queue_has_no_delivery_limit_and_drops_nothing(
    amqp_url: str, dead_lettered: list[deadletters.DeadLetter]
) -> None:
    dead = queues_in(amqp_url)[QUEUE.dead_name]
    assert dead["type"] == "classic"
    assert dead["durable"] is True
    for argument in ("x-delivery-limit", "x-message-ttl", "x-max-length", "x-max-length-bytes", "x-expires"):
        assert argument not in dead["arguments"]


async def test_replay_moves_exactly_the_chosen_message_once_with_its_trace_headers(
    amqp_url: str, dead_lettered: list[deadletters.DeadLetter]
) -> None:
    chosen = dead_lettered[1]
    assert await deadletters.replay(amqp_url, QUEUE.name, message_id=chosen.message_id) == 1
    moved = await drain(amqp_url, QUEUE.name, expect=2, timeout=1.5)
    assert [message.message_id for message in moved] == [chosen.message_id]
    headers = dict(moved[0].headers)
    assert headers["traceparent"] == chosen.headers["traceparent"]
    assert headers["x-lantern-origin-traceparent"] == chosen.headers["x-lantern-origin-traceparent"]
    assert headers[ATTEMPT_HEADER] == 1
    assert moved[0].body == chosen.body
    left = await deadletters.list_dead_letters(amqp_url, [QUEUE.name])
    assert left == [dead_lettered[0], dead_lettered[2]]
    assert await deadletters.replay(amqp_url, QUEUE.name, message_id=chosen.message_id) == 0


async def test_a_dead_queue_of_the_old_quorum_kind_is_not_read_and_its_messages_are_untouched(
    amqp_url: str,
) -> None:
    # Before this change `.dead` queues were quorum queues: each look counted as a delivery.
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        old = await channel.declare_queue(QUEUE.dead_name, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(
            aio_pika.Message(
                b"{}", message_id="old-1", headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
            ),
            routing_key=old.name,
        )
    finally:
        await connection.close()
    with pytest.raises(deadletters.DeadQueueNeedsMigration, match=QUEUE.dead_name):
        await deadletters.list_dead_letters(amqp_url, [QUEUE.name])
    with pytest.raises(deadletters.DeadQueueNeedsMigration):
        await deadletters.replay(amqp_url, QUEUE.name)
    [message] = await drain(amqp_url, QUEUE.dead_name, expect=1, timeout=2)
    assert message.message_id == "old-1"
    # Quorum queues on 3.10 show a first delivery as x-delivery-count 0: never delivered before.
    assert message.headers.get("x-delivery-count", 0) == 0
    assert not message.redelivered
