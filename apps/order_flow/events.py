"""Events of the order flow, named in the past tense; the routing key is each `event_type`."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import Field

from lantern_runtime.messaging.publisher import Event


class OrderCreated(Event):
    """An order was placed and waits for its payment (orders → payments)."""

    event_type: ClassVar[str] = "order.created"
    order_id: str
    customer_id: str
    total: Decimal = Field(gt=0)


class PaymentAuthorized(Event):
    """The bank authorized the order's total (payments → orders)."""

    event_type: ClassVar[str] = "payment.authorized"
    order_id: str
    authorization_id: str
    amount: Decimal


class PaymentDeclined(Event):
    """The bank declined the payment, or could not be reached on the last attempt (payments → orders)."""

    event_type: ClassVar[str] = "payment.declined"
    order_id: str
    reason: str


class OrderConfirmed(Event):
    """The order is paid and final (orders → notifier)."""

    event_type: ClassVar[str] = "order.confirmed"
    order_id: str
    customer_id: str
    total: Decimal


class OrderCancelled(Event):
    """The order is final unpaid: declined, or not settled in time (orders → payments, notifier)."""

    event_type: ClassVar[str] = "order.cancelled"
    order_id: str
    customer_id: str
    reason: str
