"""3. RabbitMQ restarted during a burst: every accepted order reaches a final state, and nothing
   is lost on its way from a delay queue back to its work queue.
4. A poison message lands in the dead-letter queue with its trace while others keep flowing."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import aio_pika
import httpx
import pytest

from lantern_runtime.messaging import QueueSpec, Topology, declare_topology
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, REASON_HEADER
from order_flow.topology import PAYMENTS_QUEUE
from tests.faults.conftest import assert_settled_once, place_orders, wait_until_final
from tests.integration.conftest import drain

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from devstack.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def broker_restarts() -> Iterator[None]:
    yield
    # Whatever happened in the test, leave RabbitMQ running for the next one.
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


def ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.TransportError:
        return 0


def test_a_broker_restart_mid_burst_loses_no_accepted_order(
    platform: Callable[..., Stack], broker_restarts: None
) -> None:
    stack = platform(bank={"BANK_LATENCY_MS": "5"})
    accepted: list[str] = []
    during_outage: list[str] = []
    first = threading.Thread(
        target=lambda: accepted.extend(asyncio.run(place_orders(stack.url("orders"), 100)))
    )
    first.start()
    time.sleep(0.3)
    rabbitmqctl("stop_app")
    first.join()
    # The outage shows in readiness, and orders still accepts: its outbox holds the events.
    assert ready(stack.url("orders")) == 503
    assert ready(stack.url("payments")) == 503
    during_outage.extend(asyncio.run(place_orders(stack.url("orders"), 20)))
    assert len(during_outage) == 20
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    statuses = wait_until_final(stack.url("orders"), accepted + during_outage, timeout=120)
    assert set(statuses.values()) == {"confirmed"}
    assert_settled_once(stack, statuses)
    assert ready(stack.url("orders")) == 200


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
    amqp_url: str, broker_restarts: None
) -> None:
    """At-least-once dead-lettering: a delay queue keeps each message until its work queue has
    confirmed it, across a restart and while the work queue is full; the transfer may repeat, so
    duplicates are allowed (the consumers' inboxes drop them), losses are not."""
    asyncio.run(declare(amqp_url, DELAYED, FULL))
    delayed, held = asyncio.run(put_in_delay_queues(amqp_url))
    rabbitmqctl("stop_app")
    time.sleep(2)
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
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
