"""notifier on RabbitMQ: order.confirmed and order.cancelled become one notification each."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import CurrentDelivery, event_type, work_queue_subscriber
from order_flow.events import OrderCancelled, OrderConfirmed
from order_flow.topology import NOTIFIER_QUEUE

if TYPE_CHECKING:
    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.subscriber import RabbitSubscriber

    from lantern_runtime.messaging import Delivery
    from lantern_runtime.settings import BrokerSettings
    from notifier.notifications import Notifications

logger = logging.getLogger(__name__)


def subscribe_order_outcomes(
    broker: RabbitBroker, settings: BrokerSettings, *, notifications: Notifications
) -> RabbitSubscriber:
    outcomes = work_queue_subscriber(broker, NOTIFIER_QUEUE, settings)

    @outcomes(filter=event_type(OrderConfirmed))
    async def on_order_confirmed(event: OrderConfirmed, delivery: CurrentDelivery) -> None:
        """Tells the customer the order is confirmed and what was charged."""
        await notify(event, delivery, f"Your order {event.order_id} is confirmed; {event.total} was charged.")

    @outcomes(filter=event_type(OrderCancelled))
    async def on_order_cancelled(event: OrderCancelled, delivery: CurrentDelivery) -> None:
        """Tells the customer the order was cancelled, and why."""
        await notify(event, delivery, f"Your order {event.order_id} was cancelled: {event.reason}.")

    async def notify(event: OrderConfirmed | OrderCancelled, delivery: Delivery, text: str) -> None:
        sent = await notifications.send(
            message_id=delivery.message_id,
            order_id=event.order_id,
            customer_id=event.customer_id,
            kind=event.event_type,
            text=text,
        )
        logger.info("notification", extra={"order_id": event.order_id, "sent": sent})

    return outcomes
