"""The counts behind "exactly once" can fail: each planted duplicate or contrary outcome is named
(the same outcome notified under a second key, a contrary outcome notified, a second payment
asked for under another key, a confirmed order whose authorization was voided), and a resend
under the same key with the same body is not."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING

import aio_pika
import httpx
import pytest

from tests.faults.conftest import (
    CUSTOMER,
    assert_settled_once,
    authorizations_by_order,
    bank_problems,
    bank_requests_by_order,
    place_orders,
    wait_for,
    wait_until_final,
)
from tests.webhook_receiver import outcome_problems

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.stack import Stack
    from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]


async def publish_outcome(amqp_url: str, kind: str, body: dict[str, str]) -> None:
    """An outcome event as orders' relay publishes one, under a message id of its own: what a
    relay that published one outbox row twice, each time anew, would send."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("lantern.events")
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                message_id=str(uuid.uuid4()),
                type=kind,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=kind,
        )


def test_each_count_names_a_planted_duplicate_and_lets_a_same_key_resend_pass(
    platform: Callable[..., Stack], webhook: WebhookReceiver
) -> None:
    stack = platform()
    order_ids = asyncio.run(place_orders(stack.url("orders"), 6))
    statuses = wait_until_final(stack.url("orders"), order_ids)
    assert set(statuses.values()) == {"confirmed"}
    assert_settled_once(stack, statuses, webhook)
    twice_notified, wrongly_notified, paid_twice, resent = order_ids[:4]

    # The same outcome notified again under another key, and a contrary outcome notified.
    confirmed = {"order_id": twice_notified, "customer_id": CUSTOMER, "total": "10.00"}
    asyncio.run(publish_outcome(stack.amqp_url, "order.confirmed", confirmed))
    cancelled = {"order_id": wrongly_notified, "customer_id": CUSTOMER, "reason": "planted"}
    asyncio.run(publish_outcome(stack.amqp_url, "order.cancelled", cancelled))
    # A second payment asked for under another key.
    httpx.post(
        f"{stack.url('bank')}/authorizations",
        json={"order_id": paid_twice, "amount": "10.00"},
        headers={"Idempotency-Key": f"{paid_twice}-again"},
    ).raise_for_status()
    # A resend, as after a lost answer: same key, same body, to the receiver.
    [first] = webhook.by_order()[resent]
    httpx.post(webhook.url, json=first.body, headers={"Idempotency-Key": str(first.key)}).raise_for_status()
    assert wait_for(
        lambda: (
            len(webhook.by_order().get(twice_notified, [])) == 2
            and len(webhook.by_order().get(wrongly_notified, [])) == 2
        )
    )

    named: dict[str, list[str]] = {}
    for problem in outcome_problems(webhook.by_order(), statuses):
        named.setdefault(problem.split(" ")[0], []).append(problem)
    assert set(named) == {twice_notified, wrongly_notified}, named
    assert any("notified under 2 keys" in p for p in named[twice_notified]), named
    assert any("['order.cancelled', 'order.confirmed']" in p for p in named[wrongly_notified]), named
    at_bank: dict[str, list[str]] = {}
    for problem in bank_problems(
        statuses,
        authorizations_by_order(stack.url("bank"), statuses),
        bank_requests_by_order(stack.url("bank"), statuses),
    ):
        at_bank.setdefault(problem.split(" ")[0], []).append(problem)
    assert set(at_bank) == {paid_twice, wrongly_notified}, at_bank
    assert any("authorize under keys" in p for p in at_bank[paid_twice]), at_bank
    # payments took the planted cancellation too and voided: a confirmed order left unpaid.
    assert any("authorizations ['voided']" in p for p in at_bank[wrongly_notified]), at_bank
    with pytest.raises(AssertionError, match="wrong at bank"):
        assert_settled_once(stack, statuses, webhook)
