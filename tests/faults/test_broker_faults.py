"""3. RabbitMQ restarted during a burst, gracefully or killed with SIGKILL while deliveries are
   unacked: every accepted order reaches a final state once, and nothing is lost on its way from
   a delay queue back to its work queue. These run on a RabbitMQ node of the tests' own
   (own_broker.py), never on the machine's shared one.
4. A poison message lands in the dead-letter queue with its trace while others keep flowing."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import aio_pika
import httpx
import pytest

from devstack.rabbitmq import vhost_of
from lantern_runtime.messaging import QueueSpec, Topology, declare_topology
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, REASON_HEADER
from order_flow.topology import PAYMENTS_QUEUE
from tests.faults.conftest import (
    assert_settled_once,
    bank_requests_by_order,
    place_orders,
    resends,
    wait_for,
    wait_until_final,
)
from tests.faults.own_broker import OwnRabbitMQ, own_broker_unavailable, own_rabbitmq
from tests.integration.conftest import drain

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from devstack.stack import Stack
    from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def own_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRabbitMQ]:
    unavailable = own_broker_unavailable()
    if unavailable:
        pytest.skip(f"a RabbitMQ node of the tests' own {unavailable}")
    with own_rabbitmq(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture
def own_vhost(own_node: OwnRabbitMQ) -> Iterator[str]:
    with own_node.vhost() as url:
        yield url


@pytest.fixture
def broker_restarts(own_node: OwnRabbitMQ) -> Iterator[None]:
    yield
    # Whatever happened in the test, leave the node running for the next one.
    if own_node.process is None or own_node.process.poll() is not None:
        own_node.start()
    else:
        own_node.ctl("start_app")
        own_node.ctl("await_startup")


def ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.TransportError:
        return 0


def test_a_broker_restart_mid_burst_loses_no_accepted_order(
    own_node: OwnRabbitMQ,
    own_vhost: str,
    broker_restarts: None,
    platform: Callable[..., Stack],
    webhook: WebhookReceiver,
) -> None:
    stack = platform(amqp_url=own_vhost, bank={"BANK_LATENCY_MS": "5"})
    accepted: list[str] = []
    during_outage: list[str] = []
    first = threading.Thread(
        target=lambda: accepted.extend(asyncio.run(place_orders(stack.url("orders"), 100)))
    )
    first.start()
    time.sleep(0.3)
    own_node.ctl("stop_app")
    first.join()
    # The outage shows in readiness, and orders still accepts: its outbox holds the events.
    assert ready(stack.url("orders")) == 503
    assert ready(stack.url("payments")) == 503
    during_outage.extend(asyncio.run(place_orders(stack.url("orders"), 20)))
    assert len(during_outage) == 20
    own_node.ctl("start_app")
    own_node.ctl("await_startup")
    statuses = wait_until_final(stack.url("orders"), accepted + during_outage, timeout=120)
    assert set(statuses.values()) == {"confirmed"}
    assert_settled_once(stack, statuses, webhook)
    assert ready(stack.url("orders")) == 200


def settled(stack: Stack) -> int:
    return stack.tail("payments", lines=100_000).count('"payment settled"')


def test_a_broker_killed_with_sigkill_mid_burst_loses_no_order_and_applies_none_twice(
    own_node: OwnRabbitMQ,
    own_vhost: str,
    broker_restarts: None,
    platform: Callable[..., Stack],
    webhook: WebhookReceiver,
) -> None:
    """No graceful stop: the node's VM dies with deliveries unacked and publishes unconfirmed,
    its connections drop without a close, and it recovers from what it had written."""
    stack = platform(amqp_url=own_vhost, bank={"BANK_LATENCY_MS": "30"})
    accepted: list[str] = []
    burst = threading.Thread(
        target=lambda: asyncio.run(place_orders(stack.url("orders"), 200, concurrency=10, accepted=accepted))
    )
    burst.start()
    assert wait_for(lambda: settled(stack) >= 20, timeout=30), stack.tail("payments")
    in_flight = own_node.in_flight(vhost_of(own_vhost))
    own_node.kill()
    killed_with = (settled(stack), len(accepted))
    burst.join()
    print(f"SIGKILL with {in_flight} in flight, {killed_with[0]} of {killed_with[1]} accepted settled")
    assert in_flight["unacked"] + in_flight["unconfirmed"] > 0, in_flight
    assert killed_with[0] < len(accepted) == 200
    assert wait_for(lambda: ready(stack.url("payments")) == 503, timeout=15)
    # Taken while the broker is gone: the outbox keeps them until it is back.
    during_outage = asyncio.run(place_orders(stack.url("orders"), 20))
    assert len(during_outage) == 20

    own_node.start()
    statuses = wait_until_final(stack.url("orders"), accepted + during_outage, timeout=120)
    assert set(statuses.values()) == {"confirmed"}, {
        s: list(statuses.values()).count(s) for s in set(statuses.values())
    }
    assert_settled_once(stack, statuses, webhook)
    # Reconnected by themselves.
    assert wait_for(lambda: all(ready(stack.url(s)) == 200 for s in ("orders", "payments", "notifier")), 30)
    print(f"authorize calls per order: {dict(resends(bank_requests_by_order(stack.url('bank'), statuses)))}")


# Messages waiting in a delay queue across the restart, their delays spread from 0 to 6 s: some
# are back on the work queue before the stop, some expire while RabbitMQ stops or starts, the
# rest after.
DELAYED = QueueSpec("faults.delayed", ("faults.delayed",))
DELAYED_COUNT = 200
# A work queue that is full when its delayed messages come due (its delay queue has the same
# limit, and keeps the held ones within it).
FULL = QueueSpec("faults.full", ("faults.full",), max_length=3)
HELD_COUNT = 2


async def declare(amqp_url: str, *specs: QueueSpec) -> None:
    await declare_topology(amqp_url, Topology(specs))


async def publish_to(
    channel: aio_pika.abc.AbstractChannel, queue: str, message_id: str, *, delay_ms: int | None = None
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            message_id.encode(),
            message_id=message_id,
            expiration=None if delay_ms is None else delay_ms / 1000,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=queue,
    )


async def put_in_delay_queues(amqp_url: str) -> tuple[list[str], list[str]]:
    """Fill the delay queue of DELAYED, and let HELD_COUNT delayed messages come due while FULL's
    work queue is full, then empty it. Returns the ids of each."""
    delayed = [f"delayed-{n}" for n in range(DELAYED_COUNT)]
    held = [f"held-{n}" for n in range(HELD_COUNT)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for n, message_id in enumerate(delayed):
            await publish_to(channel, DELAYED.retry_name, message_id, delay_ms=n * 6000 // DELAYED_COUNT)
        # Until RabbitMQ refuses one (reject-publish may take a message or two past the limit).
        accepted = 0
        for n in range(FULL.max_length + 10):
            try:
                await publish_to(channel, FULL.name, f"filler-{n}")
            except aio_pika.exceptions.DeliveryError:
                break
            accepted += 1
        for message_id in held:
            await publish_to(channel, FULL.retry_name, message_id, delay_ms=50)
        await asyncio.sleep(1.0)
        queue = await channel.declare_queue(FULL.name, passive=True)
        # Due, refused by the full work queue, and kept by the delay queue rather than dropped.
        assert queue.declaration_result.message_count == accepted, (
            f"{FULL.name} holds {queue.declaration_result.message_count} messages, "
            f"{accepted} accepted before it refused: the delayed ones went past its limit"
        )
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
    return delayed, held


async def collect(amqp_url: str, queue: str, wanted: set[str], timeout: float) -> set[str]:
    """Ids taken (and acked) off `queue` until all of `wanted` are seen or `timeout` passes."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen and time.monotonic() < deadline:
        try:
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                channel = await connection.channel()
                declared = await channel.get_queue(queue, ensure=False)
                while not wanted <= seen and time.monotonic() < deadline:
                    message = await declared.get(fail=False)
                    if message is None:
                        await asyncio.sleep(0.1)
                        continue
                    await message.ack()
                    seen.add(message.message_id or "")
        except (aio_pika.exceptions.AMQPError, OSError):
            # The queue's leader may still be starting.
            await asyncio.sleep(0.5)
    return seen


def test_a_broker_restart_loses_nothing_between_delay_queue_and_work_queue(
    own_node: OwnRabbitMQ, own_vhost: str, broker_restarts: None
) -> None:
    """At-least-once dead-lettering: a delay queue keeps each message until its work queue has
    confirmed it, across a restart and while the work queue is full; the transfer may repeat, so
    duplicates are allowed (the consumers' inboxes drop them), losses are not."""
    amqp_url = own_vhost
    asyncio.run(declare(amqp_url, DELAYED, FULL))
    delayed, held = asyncio.run(put_in_delay_queues(amqp_url))
    own_node.ctl("stop_app")
    time.sleep(2)
    own_node.ctl("start_app")
    own_node.ctl("await_startup")
    arrived = asyncio.run(collect(amqp_url, DELAYED.name, set(delayed), timeout=60))
    missing = sorted(set(delayed) - arrived, key=lambda i: int(i.split("-")[1]))
    assert not missing, f"{len(missing)} of {DELAYED_COUNT} delayed messages lost: {missing[:20]}"
    # Refused while the work queue was full; RabbitMQ retries the transfer when the delay queue
    # restarts (or after dead_letter_worker_publisher_confirm_timeout, 180 s by default).
    assert asyncio.run(collect(amqp_url, FULL.name, set(held), timeout=60)) >= set(held)


async def publish_poison(amqp_url: str, body: bytes) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("lantern.events")
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id="poison-1",
                type="order.created",
                content_type="application/json",
                headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="order.created",
        )


def test_a_poison_message_is_dead_lettered_with_its_trace_while_orders_keep_flowing(
    platform: Callable[..., Stack],
) -> None:
    stack = platform()
    asyncio.run(publish_poison(stack.amqp_url, b'{"order_id": "x", "total": "not a number"'))
    order_ids = asyncio.run(place_orders(stack.url("orders"), 20))
    [dead] = asyncio.run(drain(stack.amqp_url, PAYMENTS_QUEUE.dead_name, expect=1))
    assert dead.message_id == "poison-1"
    assert "not a valid order.created" in str(dead.headers[REASON_HEADER])
    assert dead.headers[ATTEMPT_HEADER] == 1
    assert str(dead.headers["x-lantern-origin-traceparent"]).startswith(
        "00-0af7651916cd43dd8448eb211c80319c-"
    )
    assert str(dead.headers["traceparent"]).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    statuses = wait_until_final(stack.url("orders"), order_ids)
    assert set(statuses.values()) == {"confirmed"}
    poison_logs = [
        line for line in stack.tail("payments", 100_000).splitlines() if "dead-lettering message" in line
    ]
    assert len(poison_logs) == 1
    assert '"trace_id": "0af7651916cd43dd8448eb211c80319c"' in poison_logs[0]
