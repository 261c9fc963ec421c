"""Orders and the rules of their life: pending until the payment settles, then final."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# What the orders.customer_id column (String(200)) holds.
MAX_CUSTOMER_ID = 200
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# The largest total the orders.total column (Numeric(14, 2)) holds.
MAX_TOTAL = Decimal("999999999999.99")


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
    """The command a client sends to place an order. The customer is the caller (the token's
    subject); `customer_id` may be left out, and when sent it must be the caller's own."""

    model_config = ConfigDict(extra="forbid")

    customer_id: NonEmpty | None = Field(
        default=None, description="Optional; when sent, it must equal the token's subject."
    )
    items: list[OrderLine] = Field(
        min_length=1, max_length=100, description=f"The order's total may be at most {MAX_TOTAL}."
    )

    @field_validator("items")
    @classmethod
    def _total_fits(cls, items: list[OrderLine]) -> list[OrderLine]:
        total = _total(items)
        if total > MAX_TOTAL:
            raise ValueError(f"the order total {total} exceeds the maximum of {MAX_TOTAL}")
        return items

    @property
    def total(self) -> Decimal:
        return _total(self.items)

    def fingerprint(self, customer_id: str) -> str:
        """Identifies the request's content for `customer_id`, so a reused Idempotency-Key can be
        told apart; the same with or without the body's customer_id (it can only be theirs)."""
        placed = self.model_copy(update={"customer_id": customer_id})
        return hashlib.sha256(placed.model_dump_json().encode()).hexdigest()


def _total(items: list[OrderLine]) -> Decimal:
    return sum((line.unit_price * line.quantity for line in items), Decimal("0"))


class InvalidTransition(Exception):
    pass


def settle(status: OrderStatus, *, paid: bool) -> OrderStatus:
    """The status after the payment settles; only a pending order can settle."""
    if status is not OrderStatus.PENDING:
        raise InvalidTransition(f"order is already {status}, it cannot settle again")
    return OrderStatus.CONFIRMED if paid else OrderStatus.CANCELLED
