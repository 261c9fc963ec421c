"""notifier's handlers in memory (FastStream's TestRabbitBroker), with a fake of its
notifications: one per outcome, retries, time limits and dead letters."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

from faststream.rabbit import TestRabbitBroker

from lantern_runtime.messaging import build_broker
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, REASON_HEADER
from notifier.consumers import subscribe_order_outcomes
from notifier.notifications import Notifications, WebhookFailed
from order_flow.events import OrderCancelled, OrderConfirmed, OrderCreated
from order_flow.topology import NOTIFIER_QUEUE
from tests.unit.broker_doubles import LAST, SETTINGS, Containing, dead_letters, deliver, retries

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from faststream.rabbit import RabbitBroker

CONFIRMED = OrderConfirmed(order_id="o-1", customer_id="c-1", total=Decimal("39.80"))
CANCELLED = OrderCancelled(order_id="o-2", customer_id="c-2", reason="over the limit")


class FakeNotifications(Notifications):
    def __init__(self, *, failing: bool = False, hanging: bool = False) -> None:
        self.sent: dict[str, tuple[str, str, str]] = {}
        self.failing = failing
        self.hanging = hanging

    async def send(self, *, message_id: str, order_id: str, customer_id: str, kind: str, text: str) -> bool:
        if self.hanging:
            await asyncio.sleep(3600)
        if self.failing:
            raise WebhookFailed("webhook answered 503")
        if message_id in self.sent:
            return False
        self.sent[message_id] = (customer_id, kind, text)
        return True


@asynccontextmanager
async def notifier(notifications: FakeNotifications) -> AsyncIterator[RabbitBroker]:
    broker = build_broker(SETTINGS, "notifier")
    subscribe_order_outcomes(broker, SETTINGS, notifications=notifications)
    async with TestRabbitBroker(broker) as test_broker:
        yield test_broker


async def test_each_outcome_becomes_one_notification() -> None:
    notifications = FakeNotifications()
    async with notifier(notifications) as broker:
        await deliver(broker, CONFIRMED, message_id="o-1:order.confirmed")
        await deliver(broker, CONFIRMED, message_id="o-1:order.confirmed")
        await deliver(broker, CANCELLED, message_id="o-2:order.cancelled")
    assert notifications.sent == {
        "o-1:order.confirmed": ("c-1", "order.confirmed", "Your order o-1 is confirmed; 39.80 was charged."),
        "o-2:order.cancelled": ("c-2", "order.cancelled", "Your order o-2 was cancelled: over the limit."),
    }


async def test_a_failing_webhook_is_retried_then_dead_lettered_with_its_reason() -> None:
    async with notifier(FakeNotifications(failing=True)) as broker:
        await deliver(broker, CONFIRMED, message_id="o-1:order.confirmed", attempt=LAST - 1)
        await retries(broker, NOTIFIER_QUEUE).assert_called_once_with(
            CONFIRMED.model_dump(mode="json"), headers={ATTEMPT_HEADER: LAST}
        )
        await deliver(broker, CONFIRMED, message_id="o-1:order.confirmed", attempt=LAST)
        await dead_letters(broker, NOTIFIER_QUEUE).assert_called_once_with(
            headers={REASON_HEADER: "WebhookFailed: webhook answered 503", ATTEMPT_HEADER: LAST}
        )


async def test_a_handler_past_its_time_limit_is_cancelled_and_retried() -> None:
    async with notifier(FakeNotifications(hanging=True)) as broker:
        async with asyncio.timeout(5):
            await deliver(broker, CONFIRMED, message_id="o-1:order.confirmed")
        await retries(broker, NOTIFIER_QUEUE).assert_called_once_with(headers={ATTEMPT_HEADER: 2})
        dead_letters(broker, NOTIFIER_QUEUE).mock.assert_not_called()


async def test_an_event_this_queue_does_not_carry_is_poison() -> None:
    notifications = FakeNotifications()
    async with notifier(notifications) as broker:
        created = OrderCreated(order_id="o-1", customer_id="c-1", total=Decimal("1"))
        await deliver(broker, created, message_id="o-1:order.created")
        await dead_letters(broker, NOTIFIER_QUEUE).assert_called_once_with(
            headers={
                REASON_HEADER: Containing(
                    "'order.created' has no handler on notifier.order-outcomes; "
                    "expected one of order.cancelled, order.confirmed"
                ),
                ATTEMPT_HEADER: 1,
            }
        )
    assert notifications.sent == {}


async def test_a_wrong_schema_is_dead_lettered_at_once() -> None:
    async with notifier(FakeNotifications()) as broker:
        await deliver(broker, b'{"order_id": "o-1"}', event_type="order.confirmed", message_id="bad")
        await dead_letters(broker, NOTIFIER_QUEUE).assert_called_once_with(
            headers={REASON_HEADER: Containing("customer_id"), ATTEMPT_HEADER: 1}
        )
        retries(broker, NOTIFIER_QUEUE).mock.assert_not_called()
