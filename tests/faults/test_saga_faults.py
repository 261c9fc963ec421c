"""The saga's compensations: an order never stays pending, and a cancelled order keeps no live
authorization at the bank."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest

from lantern_runtime.messaging import deadletters
from order_flow.topology import PAYMENTS_QUEUE
from tests.faults.conftest import (
    as_customer,
    authorizations_by_order,
    place_orders,
    wait_for,
    wait_until_final,
)
from tests.webhook_receiver import outcome_problems, wait_for_outcomes

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.stack import Stack
    from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]


def reason(stack: Stack, order_id: str) -> str:
    answer = httpx.get(f"{stack.url('orders')}/api/orders/{order_id}", auth=as_customer())
    return str(answer.json()["status_reason"])


def test_with_payments_down_the_deadline_cancels_and_the_late_authorization_is_voided(
    platform: Callable[..., Stack], webhook: WebhookReceiver
) -> None:
    stack = platform(orders={"PAYMENT_DEADLINE_SECONDS": "2"})
    stack.stop_service("payments")
    [order_id] = asyncio.run(place_orders(stack.url("orders"), 1))
    assert wait_until_final(stack.url("orders"), [order_id], timeout=20) == {order_id: "cancelled"}
    assert "payment not settled within 2s" in reason(stack, order_id)

    # payments returns: it authorizes the stale order.created, then voids on order.cancelled.
    stack.start_service("payments")
    assert wait_for(lambda: authorizations_by_order(stack.url("bank"), [order_id])[order_id] == ["voided"])
    assert not outcome_problems(wait_for_outcomes(webhook, [order_id]), {order_id: "cancelled"})
    answer = httpx.get(f"{stack.url('orders')}/api/orders/{order_id}", auth=as_customer())
    assert answer.json()["status"] == "cancelled"
    # Told once, of the cancellation, though payments authorized (and voided) after it.
    assert not outcome_problems(wait_for_outcomes(webhook, [order_id]), {order_id: "cancelled"})


def test_with_the_bank_down_the_payment_is_declined_and_the_void_waits_in_dead_letters(
    platform: Callable[..., Stack], webhook: WebhookReceiver
) -> None:
    stack = platform(payments={"MAX_DELIVERY_ATTEMPTS": "3"})
    stack.stop_service("bank")
    [order_id] = asyncio.run(place_orders(stack.url("orders"), 1))
    assert wait_until_final(stack.url("orders"), [order_id], timeout=30) == {order_id: "cancelled"}
    assert "bank unavailable after 3 attempts" in reason(stack, order_id)

    # The compensating void could not reach the bank either: it is a dead letter, replayable.
    def void_dead() -> bool:
        letters = asyncio.run(deadletters.list_dead_letters(stack.amqp_url, [PAYMENTS_QUEUE.name]))
        return [letter.message_type for letter in letters] == ["order.cancelled"]

    assert wait_for(void_dead)
    stack.start_service("bank")
    stack.wait_ready()
    assert asyncio.run(deadletters.replay(stack.amqp_url, PAYMENTS_QUEUE.name)) == 1
    assert wait_for(lambda: authorizations_by_order(stack.url("bank"), [order_id])[order_id] == ["voided"])
    assert not outcome_problems(wait_for_outcomes(webhook, [order_id]), {order_id: "cancelled"})
