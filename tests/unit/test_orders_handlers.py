"""orders' payment-result handlers in memory (FastStream's TestRabbitBroker), with a fake of
the orders they settle: the outcome each publishes, retries and dead letters."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from faststream.rabbit import TestRabbitBroker

from lantern_runtime.messaging import EventPublisher, build_broker
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, REASON_HEADER
from order_flow.events import OrderCancelled, OrderConfirmed, PaymentAuthorized, PaymentDeclined
from order_flow.topology import ORDERS_QUEUE
from orders.consumers import declare_publishers, subscribe_payment_results
from orders.domain import OrderStatus, settle
from orders.repository import OrderRecord, PaymentResults
from tests.unit.broker_doubles import (
    LAST,
    SETTINGS,
    Containing,
    OutboxRelayDouble,
    dead_letters,
    deliver,
    emitted,
    retries,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from faststream.rabbit import RabbitBroker

    from lantern_runtime.messaging import Event

AUTHORIZED = PaymentAuthorized(order_id="o-1", authorization_id="a-1", amount=Decimal("39.80"))
DECLINED = PaymentDeclined(order_id="o-1", reason="over the limit")


class FakeOrders(PaymentResults):
    def __init__(self, *orders: str, down: bool = False) -> None:
        now = datetime.now(UTC)
        self.orders = {
            order_id: OrderRecord(order_id, "c-1", OrderStatus.PENDING, Decimal("39.80"), [], None, now, now)
            for order_id in orders
        }
        self.inbox: set[str] = set()
        self.outbox: list[Event] = []
        self.down = down

    async def settle_payment(
        self, order_id: str, *, paid: bool, reason: str | None, message_id: str
    ) -> OrderRecord | None:
        if self.down:
            raise ConnectionError("database is down")
        if message_id in self.inbox:
            return None
        order = self.orders.get(order_id)
        if order is None:
            raise LookupError(f"order {order_id} does not exist")
        order = replace(order, status=settle(order.status, paid=paid), status_reason=reason)
        self.inbox.add(message_id)
        self.orders[order_id] = order
        if order.status is OrderStatus.CONFIRMED:
            self.outbox.append(
                OrderConfirmed(order_id=order_id, customer_id=order.customer_id, total=order.total)
            )
        else:
            self.outbox.append(
                OrderCancelled(order_id=order_id, customer_id=order.customer_id, reason=reason or "")
            )
        return order


@asynccontextmanager
async def orders_service(orders: FakeOrders) -> AsyncIterator[tuple[RabbitBroker, OutboxRelayDouble]]:
    broker = build_broker(SETTINGS, "orders")
    relay = OutboxRelayDouble(orders.outbox, EventPublisher(broker, publishers=declare_publishers(broker)))
    subscribe_payment_results(broker, SETTINGS, orders=orders, wake_relay=relay.wake)
    async with TestRabbitBroker(broker) as test_broker:
        yield test_broker, relay


async def test_payment_authorized_confirms_the_order_and_publishes_order_confirmed() -> None:
    orders = FakeOrders("o-1")
    async with orders_service(orders) as (broker, relay):
        await deliver(broker, AUTHORIZED, message_id="o-1:payment.authorized")
        await relay.publish_pending()
        emitted(broker, OrderConfirmed).mock.assert_called_once_with(
            {"order_id": "o-1", "customer_id": "c-1", "total": "39.80"}
        )
        emitted(broker, OrderCancelled).mock.assert_not_called()
    assert orders.orders["o-1"].status is OrderStatus.CONFIRMED
    assert relay.woken == 1


async def test_payment_declined_cancels_the_order_with_the_reason() -> None:
    orders = FakeOrders("o-1")
    async with orders_service(orders) as (broker, relay):
        await deliver(broker, DECLINED, message_id="o-1:payment.declined")
        await relay.publish_pending()
        emitted(broker, OrderCancelled).mock.assert_called_once_with(
            {"order_id": "o-1", "customer_id": "c-1", "reason": "over the limit"}
        )
    assert orders.orders["o-1"].status is OrderStatus.CANCELLED


async def test_a_duplicate_or_late_result_changes_nothing_and_publishes_nothing() -> None:
    orders = FakeOrders("o-1")
    async with orders_service(orders) as (broker, relay):
        await deliver(broker, AUTHORIZED, message_id="o-1:payment.authorized")
        await deliver(broker, AUTHORIZED, message_id="o-1:payment.authorized")  # redelivered
        await deliver(broker, DECLINED, message_id="o-1:payment.declined")  # too late: already final
        await relay.publish_pending()
        emitted(broker, OrderConfirmed).mock.assert_called_once()
        emitted(broker, OrderCancelled).mock.assert_not_called()
        dead_letters(broker, ORDERS_QUEUE).mock.assert_not_called()
    assert relay.woken == 1


async def test_a_result_for_an_unknown_order_is_poison() -> None:
    async with orders_service(FakeOrders()) as (broker, _relay):
        await deliver(broker, AUTHORIZED, message_id="o-1:payment.authorized", attempt=1)
        retries(broker, ORDERS_QUEUE).mock.assert_not_called()
        await dead_letters(broker, ORDERS_QUEUE).assert_called_once_with(
            AUTHORIZED.model_dump(mode="json"),
            headers={REASON_HEADER: "order o-1 does not exist", ATTEMPT_HEADER: 1},
        )


async def test_a_failure_is_retried_then_dead_lettered_on_the_last_attempt() -> None:
    async with orders_service(FakeOrders("o-1", down=True)) as (broker, relay):
        await deliver(broker, AUTHORIZED, message_id="o-1:payment.authorized", attempt=1)
        await retries(broker, ORDERS_QUEUE).assert_called_once_with(headers={ATTEMPT_HEADER: 2})
        dead_letters(broker, ORDERS_QUEUE).mock.assert_not_called()

        await deliver(broker, AUTHORIZED, message_id="o-1:payment.authorized", attempt=LAST)
        retries(broker, ORDERS_QUEUE).mock.assert_called_once()
        await dead_letters(broker, ORDERS_QUEUE).assert_called_once_with(
            headers={REASON_HEADER: "ConnectionError: database is down", ATTEMPT_HEADER: LAST}
        )
    assert relay.woken == 0


async def test_a_body_without_an_order_id_is_dead_lettered_at_once() -> None:
    async with orders_service(FakeOrders("o-1")) as (broker, _relay):
        await deliver(broker, b'{"reason": "x"}', event_type="payment.declined", message_id="p")
        await dead_letters(broker, ORDERS_QUEUE).assert_called_once_with(
            headers={REASON_HEADER: Containing("not a valid payment.declined"), ATTEMPT_HEADER: 1}
        )
        retries(broker, ORDERS_QUEUE).mock.assert_not_called()
