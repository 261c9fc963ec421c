"""Notifications sent, one per order outcome message however often it is delivered: the
notification row, keyed by the message id, is the record that it was sent."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError

from lantern_runtime.resilience import UpstreamError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.resilience import UpstreamClient

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    Column("message_id", String(200), primary_key=True),
    Column("order_id", String(36), nullable=False, index=True),
    Column("customer_id", String(200), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("text", Text, nullable=False),
    Column("delivered_to", Text, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)


class WebhookFailed(Exception):
    """The webhook did not take the notification; the message will be retried."""


class Notifications(ABC):
    """What notifier's handlers need: the port their fakes subclass."""

    @abstractmethod
    async def send(self, *, message_id: str, order_id: str, customer_id: str, kind: str, text: str) -> bool:
        """Send and record the notification once; False when this message was sent before."""


class NotificationSender(Notifications):
    """POSTs each notification to the webhook when one is set, and records it. `webhook`'s base
    URL is the webhook's origin and `path` the rest of its URL: httpx joins a request's URL to a
    base URL as to a directory, so an empty one would POST to the path with a slash added."""

    def __init__(self, engine: AsyncEngine, webhook: UpstreamClient | None, path: str = "") -> None:
        self._engine = engine
        self._webhook = webhook
        self._path = path

    async def send(self, *, message_id: str, order_id: str, customer_id: str, kind: str, text: str) -> bool:
        """Returns False when this message was sent before."""
        async with self._engine.connect() as conn:
            seen = (
                await conn.execute(
                    select(notifications.c.message_id).where(notifications.c.message_id == message_id)
                )
            ).first()
        if seen:
            return False
        delivered_to = "record"
        if self._webhook is not None:
            await self._post(
                message_id, {"order_id": order_id, "customer_id": customer_id, "kind": kind, "text": text}
            )
            delivered_to = self._webhook.name
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(notifications).values(
                        message_id=message_id,
                        order_id=order_id,
                        customer_id=customer_id,
                        kind=kind,
                        text=text,
                        delivered_to=delivered_to,
                        sent_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def _post(self, message_id: str, payload: dict[str, str]) -> None:
        assert self._webhook is not None
        try:
            # The message id as idempotency key lets the receiver drop a resend.
            response = await self._webhook.request(
                "POST", self._path, json=payload, headers={"Idempotency-Key": message_id}
            )
        except UpstreamError as error:
            raise WebhookFailed(str(error)) from error
        # Only a 2xx took it: a redirect followed by nobody delivered nothing.
        if not response.is_success:
            raise WebhookFailed(f"webhook answered {response.status_code}")

    async def for_order(self, order_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The first `limit` notifications of `order_id`, oldest first."""
        query = (
            select(notifications)
            .where(notifications.c.order_id == order_id)
            .order_by(notifications.c.sent_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [{**row._asdict(), "sent_at": row.sent_at.isoformat()} for row in rows]
