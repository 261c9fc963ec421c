"""Orders and the rules of their life: pending until the payment settles, then final."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: NonEmpty
    quantity: int = Field(ge=1, le=10_000)
    unit_price: Decimal = Field(gt=0, max_digits=12, decimal_places=2)


class PlaceOrder(BaseModel):
    """The command a client sends to place an order."""

    model_config = ConfigDict(extra="forbid")

    customer_id: NonEmpty
    items: list[OrderLine] = Field(min_length=1, max_length=100)

    @property
    def total(self) -> Decimal:
        return sum((line.unit_price * line.quantity for line in self.items), Decimal("0"))

    def fingerprint(self) -> str:
        """Identifies the request's content, so a reused Idempotency-Key can be told apart."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class InvalidTransition(Exception):
    pass


def settle(status: OrderStatus, *, paid: bool) -> OrderStatus:
    """The status after the payment settles; only a pending order can settle."""
    if status is not OrderStatus.PENDING:
        raise InvalidTransition(f"order is already {status}, it cannot settle again")
    return OrderStatus.CONFIRMED if paid else OrderStatus.CANCELLED
