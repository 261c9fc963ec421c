"""Reads and writes of orders, each write committed together with its outbox event."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from lantern_runtime.storage import add_to_outbox, first_delivery
from order_flow.events import OrderCancelled, OrderConfirmed, OrderCreated
from orders.domain import OrderStatus, settle
from orders.tables import inbox, orders, outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.messaging.publisher import Event
    from orders.domain import PlaceOrder


class IdempotencyConflict(Exception):
    """The customer used the Idempotency-Key before with a different request body."""


@dataclass(frozen=True)
class OrderRecord:
    id: str
    customer_id: str
    status: OrderStatus
    total: Decimal
    items: list[dict[str, Any]]
    status_reason: str | None
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.id,
            "customer_id": self.customer_id,
            "status": self.status.value,
            "total": str(self.total),
            "items": self.items,
            "status_reason": self.status_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _record(row: Any) -> OrderRecord:
    return OrderRecord(
        id=row.id,
        customer_id=row.customer_id,
        status=OrderStatus(row.status),
        total=Decimal(row.total).quantize(Decimal("0.01")),
        items=row.items,
        status_reason=row.status_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _outcome_event(order: OrderRecord) -> Event:
    if order.status is OrderStatus.CONFIRMED:
        return OrderConfirmed(order_id=order.id, customer_id=order.customer_id, total=order.total)
    return OrderCancelled(order_id=order.id, customer_id=order.customer_id, reason=order.status_reason or "")


class PaymentResults(ABC):
    """What the payment-result handlers need of the orders: the port their fakes subclass."""

    @abstractmethod
    async def settle_payment(
        self, order_id: str, *, paid: bool, reason: str | None, message_id: str
    ) -> OrderRecord | None:
        """Settle the order and queue its outcome event in one commit; None when the message was
        applied before. Raises LookupError for an unknown order, InvalidTransition for a final one."""


class OrderRepository(PaymentResults):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, order_id: str, *, customer_id: str | None = None) -> OrderRecord | None:
        """The order, or None; with `customer_id`, None too when it is another customer's."""
        query = select(orders).where(orders.c.id == order_id)
        if customer_id is not None:
            query = query.where(orders.c.customer_id == customer_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def place(
        self, customer_id: str, command: PlaceOrder, idempotency_key: str
    ) -> tuple[OrderRecord, bool]:
        """Store a new pending order of `customer_id` and its OrderCreated event, or return the
        order this customer placed before with this key. Returns (order, created)."""
        fingerprint = command.fingerprint(customer_id)
        existing = await self._by_key(customer_id, idempotency_key, fingerprint)
        if existing:
            return existing, False
        order_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(orders).values(
                        id=order_id,
                        customer_id=customer_id,
                        status=OrderStatus.PENDING.value,
                        total=command.total,
                        items=[line.model_dump(mode="json") for line in command.items],
                        idempotency_key=idempotency_key,
                        request_fingerprint=fingerprint,
                        created_at=now,
                        updated_at=now,
                    )
                )
                event = OrderCreated(order_id=order_id, customer_id=customer_id, total=command.total)
                await add_to_outbox(
                    conn,
                    outbox,
                    event,
                    message_id=f"{order_id}:{event.event_type}",
                    correlation_id=order_id,
                )
        except IntegrityError:
            # Another request of this customer with the same key won the race; answer with its order.
            existing = await self._by_key(customer_id, idempotency_key, fingerprint)
            if existing is None:
                raise
            return existing, False
        order = await self.get(order_id)
        assert order is not None, "the order was just committed"
        return order, True

    async def _by_key(self, customer_id: str, idempotency_key: str, fingerprint: str) -> OrderRecord | None:
        # Only this customer's own orders: another's key is another key.
        query = select(orders).where(
            orders.c.customer_id == customer_id, orders.c.idempotency_key == idempotency_key
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        if row.request_fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {idempotency_key!r} was already used for a different order of yours "
                f"({row.id}); send a new key for a new order"
            )
        return _record(row)

    async def settle_payment(
        self, order_id: str, *, paid: bool, reason: str | None, message_id: str
    ) -> OrderRecord | None:
        """Apply a payment result once: update the order and queue OrderConfirmed or
        OrderCancelled in the same transaction. Returns None when the message was applied before.
        """
        async with self._engine.begin() as conn:
            if not await first_delivery(conn, inbox, message_id):
                return None
            row = (
                await conn.execute(select(orders).where(orders.c.id == order_id).with_for_update())
            ).first()
            if row is None:
                raise LookupError(f"order {order_id} does not exist")
            new_status = settle(OrderStatus(row.status), paid=paid)
            now = datetime.now(UTC)
            await conn.execute(
                update(orders)
                .where(orders.c.id == order_id)
                .values(status=new_status.value, status_reason=reason, updated_at=now)
            )
            order = replace(_record(row), status=new_status, status_reason=reason, updated_at=now)
            event = _outcome_event(order)
            await add_to_outbox(
                conn, outbox, event, message_id=f"{order_id}:{event.event_type}", correlation_id=order_id
            )
        return order

    async def cancel_overdue(self, deadline: timedelta, *, limit: int = 100) -> list[OrderRecord]:
        """Cancel orders whose payment has not settled within the deadline, so none stays pending."""
        now = datetime.now(UTC)
        reason = f"payment not settled within {deadline.total_seconds():g}s"
        overdue = (
            select(orders.c.id)
            .where(orders.c.status == OrderStatus.PENDING.value, orders.c.created_at < now - deadline)
            .order_by(orders.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self._engine.begin() as conn:
            # One UPDATE … RETURNING: the transaction starts with its write (see storage.database).
            rows = (
                await conn.execute(
                    update(orders)
                    .where(orders.c.id.in_(overdue), orders.c.status == OrderStatus.PENDING.value)
                    .values(status=OrderStatus.CANCELLED.value, status_reason=reason, updated_at=now)
                    .returning(*orders.c)
                )
            ).all()
            cancelled = [_record(row) for row in rows]
            for order in cancelled:
                event = _outcome_event(order)
                await add_to_outbox(
                    conn, outbox, event, message_id=f"{order.id}:{event.event_type}", correlation_id=order.id
                )
        return cancelled
