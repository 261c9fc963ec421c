"""Notifications sent, one per order outcome message, however often it is delivered."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Notification:
    message_id: str
    order_id: str
    customer_id: str
    kind: str
    text: str
    delivered_to: str
    sent_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "sent_at": self.sent_at.isoformat()}


class Outbox:
    """Sends notifications: POSTs to the webhook when one is set, and records each one sent."""

    def __init__(self, webhook: httpx.AsyncClient | None) -> None:
        self._webhook = webhook
        self._sent: dict[str, Notification] = {}

    async def send(self, *, message_id: str, order_id: str, customer_id: str, kind: str, text: str) -> bool:
        """Returns False when this message was sent before."""
        if message_id in self._sent:
            return False
        payload = {"order_id": order_id, "customer_id": customer_id, "kind": kind, "text": text}
        if self._webhook is not None:
            response = await self._webhook.post("", json=payload, headers={"Idempotency-Key": message_id})
            response.raise_for_status()
            delivered_to = str(self._webhook.base_url)
        else:
            delivered_to = "record"
        self._sent[message_id] = Notification(
            message_id, order_id, customer_id, kind, text, delivered_to, datetime.now(UTC)
        )
        return True

    def for_order(self, order_id: str | None) -> list[Notification]:
        return [n for n in self._sent.values() if order_id is None or n.order_id == order_id]
