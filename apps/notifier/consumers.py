"""order.confirmed and order.cancelled become one notification each."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import Consumer
from order_flow.events import OrderCancelled, OrderConfirmed

if TYPE_CHECKING:
    from lantern_runtime.messaging.consumer import Delivery
    from notifier.notifications import NotificationSender

logger = logging.getLogger(__name__)


def outcome_consumers(sender: NotificationSender) -> dict[str, Consumer]:
    async def notify(event: OrderConfirmed | OrderCancelled, delivery: Delivery, text: str) -> None:
        sent = await sender.send(
            message_id=delivery.message_id,
            order_id=event.order_id,
            customer_id=event.customer_id,
            kind=event.event_type,
            text=text,
        )
        logger.info("notification", extra={"order_id": event.order_id, "sent": sent})

    async def on_confirmed(event: OrderConfirmed, delivery: Delivery) -> None:
        await notify(event, delivery, f"Your order {event.order_id} is confirmed; {event.total} was charged.")

    async def on_cancelled(event: OrderCancelled, delivery: Delivery) -> None:
        await notify(event, delivery, f"Your order {event.order_id} was cancelled: {event.reason}.")

    return {
        OrderConfirmed.event_type: Consumer(OrderConfirmed, on_confirmed),
        OrderCancelled.event_type: Consumer(OrderCancelled, on_cancelled),
    }
