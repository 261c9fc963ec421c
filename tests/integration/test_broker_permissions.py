"""Least privilege on the live RabbitMQ: each service's user, with exactly the permissions the
chart gives it (lantern_runtime.messaging.permissions, which tests/deploy checks against the
chart's definitions), can do its own work and nothing of another service's."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from devstack.rabbitmq import service_users
from devstack.stack import chart_components
from lantern_runtime.messaging import (
    MessageTooLarge,
    PoisonMessage,
    build_broker,
    deadletters,
    event_publisher,
    event_type,
    start_broker,
    work_queue_subscriber,
)
from lantern_runtime.messaging.consumer import PUBLISHER_HEADER
from lantern_runtime.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    REDELIVERIES_EXCHANGE,
    TopologyNotDeclared,
)
from lantern_runtime.settings import BrokerSettings
from order_flow.events import OrderCreated
from order_flow.topology import NOTIFIER_QUEUE, ORDER_FLOW, ORDERS_QUEUE, PAYMENTS_QUEUE
from tests.integration.conftest import queue_depth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from aio_pika.abc import AbstractChannel

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def users(amqp_url: str) -> Iterator[dict[str, str]]:
    """Each AMQP component's URL, its user made as the devstack makes it from the chart."""
    publishes = {name: c.publishes for name, c in chart_components().items() if c.amqp}
    with service_users(amqp_url, publishes) as urls:
        yield urls


@pytest.fixture
async def connect(users: dict[str, str]) -> AsyncIterator[Callable[[str], Awaitable[AbstractChannel]]]:
    """A confirming channel of a new connection as the named component's user."""
    connections: list[aio_pika.abc.AbstractConnection] = []

    async def channel(component: str) -> AbstractChannel:
        connection = await aio_pika.connect(users[component])
        connections.append(connection)
        return await connection.channel(publisher_confirms=True)

    yield channel
    for connection in connections:
        await connection.close()


def message(body: bytes = b"{}", **properties: Any) -> aio_pika.Message:
    return aio_pika.Message(body, message_id=str(uuid.uuid4()), **properties)


async def publish(channel: AbstractChannel, exchange: str, routing_key: str, **properties: Any) -> None:
    target = (
        channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
    )
    await target.publish(message(**properties), routing_key=routing_key, mandatory=True, timeout=5)


async def refused(operation: Awaitable[object]) -> str:
    """RabbitMQ's reason for refusing `operation` (it closes the channel with 403)."""
    with pytest.raises(ChannelAccessRefused) as refusal:
        await operation
    return str(refusal.value)


async def test_payments_publishes_its_own_events_and_none_of_another_service(
    connect: Callable[[str], Awaitable[AbstractChannel]], amqp_url: str
) -> None:
    await publish(await connect("payments"), EVENTS_EXCHANGE.name, "payment.authorized")
    assert await queue_depth(amqp_url, ORDERS_QUEUE.name) == 1
    for event in ("order.created", "order.cancelled"):
        reason = await refused(publish(await connect("payments"), EVENTS_EXCHANGE.name, event))
        assert f"access to topic '{event}'" in reason, reason
    assert await queue_depth(amqp_url, PAYMENTS_QUEUE.name) == 0


async def test_orders_cannot_publish_a_payment_outcome_and_notifier_publishes_no_event(
    connect: Callable[[str], Awaitable[AbstractChannel]], amqp_url: str
) -> None:
    reason = await refused(publish(await connect("orders"), EVENTS_EXCHANGE.name, "payment.authorized"))
    assert "access to topic 'payment.authorized'" in reason, reason
    reason = await refused(publish(await connect("notifier"), EVENTS_EXCHANGE.name, "order.confirmed"))
    assert "exchange 'lantern.events'" in reason, reason
    await publish(await connect("orders"), EVENTS_EXCHANGE.name, "order.confirmed")
    assert await queue_depth(amqp_url, NOTIFIER_QUEUE.name) == 1
    assert await queue_depth(amqp_url, ORDERS_QUEUE.name) == 0


@pytest.mark.parametrize(
    ("exchange", "routing_key"),
    [
        ("", ORDERS_QUEUE.retry_name),
        ("", ORDERS_QUEUE.dead_name),
        ("", ORDERS_QUEUE.name),
        (REDELIVERIES_EXCHANGE.name, ORDERS_QUEUE.retry_name),
        (REDELIVERIES_EXCHANGE.name, ORDERS_QUEUE.dead_name),
        (DEAD_LETTER_EXCHANGE.name, ORDERS_QUEUE.name),
        ("amq.direct", ORDERS_QUEUE.dead_name),
        ("amq.topic", ORDERS_QUEUE.retry_name),
    ],
    ids=lambda value: value or "default-exchange",
)
async def test_payments_cannot_reach_another_services_queues_through_any_exchange(
    connect: Callable[[str], Awaitable[AbstractChannel]], amqp_url: str, exchange: str, routing_key: str
) -> None:
    await refused(publish(await connect("payments"), exchange, routing_key))
    for name in (ORDERS_QUEUE.name, ORDERS_QUEUE.retry_name, ORDERS_QUEUE.dead_name):
        assert await queue_depth(amqp_url, name) == 0


async def test_payments_can_neither_delete_nor_purge_another_services_queue_nor_delete_its_own(
    connect: Callable[[str], Awaitable[AbstractChannel]], amqp_url: str
) -> None:
    await publish(await connect("orders"), EVENTS_EXCHANGE.name, "order.created")
    for queue in (ORDERS_QUEUE.name, ORDERS_QUEUE.dead_name, PAYMENTS_QUEUE.name, PAYMENTS_QUEUE.dead_name):
        channel = await connect("payments")
        await refused(channel.queue_delete(queue))
    for queue in (ORDERS_QUEUE.name, ORDERS_QUEUE.retry_name, PAYMENTS_QUEUE.dead_name):
        channel = await connect("payments")
        await refused((await channel.get_queue(queue, ensure=True)).purge())
    # Nor redeclare one with other arguments, nor make one of its own.
    channel = await connect("payments")
    await refused(channel.declare_queue(PAYMENTS_QUEUE.name, durable=True))
    channel = await connect("payments")
    await refused(channel.declare_queue("payments.mine", durable=True))
    channel = await connect("payments")
    await refused(channel.declare_exchange(EVENTS_EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True))
    # Everything is still there, the order.created it was sent included.
    assert await queue_depth(amqp_url, PAYMENTS_QUEUE.name) == 1


async def test_a_service_reads_only_its_own_work_queue(
    connect: Callable[[str], Awaitable[AbstractChannel]],
) -> None:
    for queue in (ORDERS_QUEUE.name, PAYMENTS_QUEUE.dead_name, PAYMENTS_QUEUE.retry_name):
        channel = await connect("payments")
        await refused((await channel.get_queue(queue, ensure=True)).get(fail=False))
    channel = await connect("payments")
    assert await (await channel.get_queue(PAYMENTS_QUEUE.name, ensure=True)).get(fail=False) is None


async def test_a_retry_goes_by_lantern_redeliveries_and_back_to_the_work_queue_with_no_permission(
    connect: Callable[[str], Awaitable[AbstractChannel]], amqp_url: str
) -> None:
    """The delay queue's TTL dead-letters the message back onto the work queue: RabbitMQ's own
    doing, through the default exchange, which the payments user may not write to itself."""
    channel = await connect("payments")
    await publish(channel, REDELIVERIES_EXCHANGE.name, PAYMENTS_QUEUE.retry_name, expiration=0.2)
    work = await channel.get_queue(PAYMENTS_QUEUE.name, ensure=True)
    for _ in range(100):
        if (back := await work.get(fail=False)) is not None:
            break
        await asyncio.sleep(0.05)
    assert back is not None, "the retried message did not come back to the work queue"
    await back.ack()
    await publish(channel, REDELIVERIES_EXCHANGE.name, PAYMENTS_QUEUE.dead_name)
    assert await queue_depth(amqp_url, PAYMENTS_QUEUE.dead_name) == 1


async def test_user_id_must_be_the_connecting_user_and_reaches_the_consumer(
    connect: Callable[[str], Awaitable[AbstractChannel]], users: dict[str, str]
) -> None:
    orders_user = aio_pika.connection.make_url(users["orders"]).user
    payments_user = aio_pika.connection.make_url(users["payments"]).user
    with pytest.raises(ChannelPreconditionFailed, match="user_id property set to"):
        await publish(await connect("orders"), EVENTS_EXCHANGE.name, "order.created", user_id=payments_user)
    await publish(await connect("orders"), EVENTS_EXCHANGE.name, "order.created", user_id=orders_user)
    channel = await connect("payments")
    received = await (await channel.get_queue(PAYMENTS_QUEUE.name, ensure=True)).get(fail=False)
    assert received is not None
    assert received.user_id == orders_user


async def test_a_services_broker_stamps_its_user_and_refuses_a_message_over_the_limit(
    users: dict[str, str], amqp_url: str
) -> None:
    settings = BrokerSettings(amqp_url=users["orders"], broker_max_message_bytes=64 * 1024)
    broker = build_broker(settings, "orders")
    created = event_publisher(broker, OrderCreated)
    await start_broker(broker, ORDER_FLOW, settings)
    try:
        with pytest.raises(MessageTooLarge, match=r"is 65537 bytes, over the broker's limit of 65536 bytes"):
            await created.publish(b"x" * (64 * 1024 + 1), message_id="too-big", timeout=5)
        await created.publish(b"x" * (64 * 1024), message_id="fits", timeout=5)
    finally:
        await broker.stop()
    connection = await aio_pika.connect(amqp_url)
    try:
        queue = await (await connection.channel()).get_queue(PAYMENTS_QUEUE.name, ensure=True)
        arrived = await queue.get(fail=False)
        assert arrived is not None
        assert (arrived.message_id, arrived.user_id) == (
            "fits",
            aio_pika.connection.make_url(users["orders"]).user,
        )
        assert await queue.get(fail=False) is None
    finally:
        await connection.close()


async def test_a_service_whose_topology_is_not_declared_says_which_queue_is_missing(
    users: dict[str, str], amqp_url: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        await (await connection.channel()).queue_delete(PAYMENTS_QUEUE.retry_name)
    finally:
        await connection.close()
    settings = BrokerSettings(amqp_url=users["payments"])
    broker = build_broker(settings, "payments")
    try:
        with pytest.raises(
            TopologyNotDeclared,
            match=rf"queue {PAYMENTS_QUEUE.retry_name} is not declared; run the topology step",
        ):
            await start_broker(broker, ORDER_FLOW, settings)
    finally:
        await broker.stop()


async def test_a_dead_letter_names_its_first_publisher_and_the_admin_replays_it_as_itself(
    users: dict[str, str], amqp_url: str
) -> None:
    """payments' consumer dead-letters an order.created that orders published: the dead letter
    carries payments' user_id and orders' in x-lantern-publisher. Replayed by the admin (who
    may not publish with another user's user_id, having no `impersonator` tag), it goes out
    with the admin's user_id and keeps the first publisher."""
    orders_user = aio_pika.connection.make_url(users["orders"]).user
    settings = BrokerSettings(amqp_url=users["payments"])
    broker = build_broker(settings, "payments")

    async def refuse(event: OrderCreated) -> None:
        raise PoisonMessage(f"order {event.order_id} cannot be paid")

    work_queue_subscriber(broker, PAYMENTS_QUEUE, settings)(refuse, filter=event_type(OrderCreated))
    await start_broker(broker, ORDER_FLOW, settings)
    try:
        connection = await aio_pika.connect(users["orders"])
        try:
            channel = await connection.channel(publisher_confirms=True)
            body = OrderCreated(order_id="o-1", customer_id="c-1", total="1.00").model_dump_json().encode()
            exchange = await channel.get_exchange(EVENTS_EXCHANGE.name, ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    body, message_id="o-1:order.created", type="order.created", user_id=orders_user
                ),
                routing_key="order.created",
            )
        finally:
            await connection.close()
        letters: list[deadletters.DeadLetter] = []
        for _ in range(200):
            if letters := await deadletters.list_dead_letters(amqp_url, [PAYMENTS_QUEUE.name]):
                break
            await asyncio.sleep(0.05)
    finally:
        await broker.stop()
    [letter] = letters
    assert letter.publisher == orders_user
    assert await deadletters.replay(amqp_url, PAYMENTS_QUEUE.name) == 1
    connection = await aio_pika.connect(amqp_url)
    try:
        queue = await (await connection.channel()).get_queue(PAYMENTS_QUEUE.name, ensure=True)
        replayed = await queue.get(fail=False)
        assert replayed is not None
        assert replayed.user_id == "guest"
        assert replayed.headers[PUBLISHER_HEADER] in (orders_user, orders_user.encode())
    finally:
        await connection.close()
