"""3. RabbitMQ restarted during a burst: every accepted order reaches a final state.
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
