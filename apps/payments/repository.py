"""Payments and their events, each change committed with its inbox entry and outbox event."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from lantern_runtime.storage import add_to_outbox, first_delivery
from payments.tables import inbox, outbox, payments

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from lantern_runtime.messaging.publisher import Event


class PaymentLedger(ABC):
    """What payments' handlers need of its database: the port their fakes subclass."""

    @abstractmethod
    async def applied(self, message_id: str) -> bool:
        """True if the message was applied before."""

    @abstractmethod
    async def settle(
        self,
        message_id: str,
        *,
        order_id: str,
        status: str,
        amount: Decimal | None,
        authorization_id: str | None,
        reason: str | None,
        result: Event,
    ) -> bool:
        """Record the payment and queue its result event in one commit; False if applied before."""

    @abstractmethod
    async def mark_voided(self, message_id: str, order_id: str) -> bool:
        """Record the void; False if the message was applied before."""


class PaymentRepository(PaymentLedger):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def applied(self, message_id: str) -> bool:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(inbox).where(inbox.c.message_id == message_id))).first()
        return row is not None

    async def settle(
        self,
        message_id: str,
        *,
        order_id: str,
        status: str,
        amount: Decimal | None,
        authorization_id: str | None,
        reason: str | None,
        result: Event,
    ) -> bool:
        """Record the payment and queue its result event; False if the message was applied before."""
        async with self._engine.begin() as conn:
            if not await first_delivery(conn, inbox, message_id):
                return False
            values = {
                "status": status,
                "amount": amount,
                "authorization_id": authorization_id,
                "reason": reason,
                "updated_at": datetime.now(UTC),
            }
            await self._upsert(conn, order_id, values)
            await add_to_outbox(
                conn, outbox, result, message_id=f"{order_id}:{result.event_type}", correlation_id=order_id
            )
        return True

    async def mark_voided(self, message_id: str, order_id: str) -> bool:
        async with self._engine.begin() as conn:
            if not await first_delivery(conn, inbox, message_id):
                return False
            await self._upsert(
                conn,
                order_id,
                {"status": "voided", "reason": "order cancelled", "updated_at": datetime.now(UTC)},
            )
        return True

    @staticmethod
    async def _upsert(conn: AsyncConnection, order_id: str, values: dict[str, object]) -> None:
        found = (
            await conn.execute(select(payments.c.order_id).where(payments.c.order_id == order_id))
        ).first()
        if found:
            await conn.execute(update(payments).where(payments.c.order_id == order_id).values(**values))
        else:
            await conn.execute(insert(payments).values(order_id=order_id, **values))
