"""Events of the order flow, named in the past tense; the routing key is each `event_type`."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from pydantic import Field

from lantern_runtime.messaging.publisher import Event


class OrderCreated(Event):
    event_type: ClassVar[str] = "order.created"
    order_id: str
    customer_id: str
    total: Decimal = Field(gt=0)


class PaymentAuthorized(Event):
    event_type: ClassVar[str] = "payment.authorized"
    order_id: str
    authorization_id: str
    amount: Decimal


class PaymentDeclined(Event):
    event_type: ClassVar[str] = "payment.declined"
    order_id: str
    reason: str


class OrderConfirmed(Event):
    event_type: ClassVar[str] = "order.confirmed"
    order_id: str
    customer_id: str
    total: Decimal


class OrderCancelled(Event):
    event_type: ClassVar[str] = "order.cancelled"
    order_id: str
    customer_id: str
    reason: str
