"""orders on RabbitMQ: it emits order.created, order.confirmed and order.cancelled (through its
outbox), and settles each order on its payment result, applied once with its outcome event in
one commit."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import (
    CurrentDelivery,
    PoisonMessage,
    event_publisher,
    event_type,
    work_queue_subscriber,
)
from order_flow.events import OrderCancelled, OrderConfirmed, OrderCreated, PaymentAuthorized, PaymentDeclined
from order_flow.topology import ORDERS_QUEUE
from orders.domain import InvalidTransition

if TYPE_CHECKING:
    from collections.abc import Callable

    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.publisher import RabbitPublisher
    from faststream.rabbit.subscriber import RabbitSubscriber

    from lantern_runtime.messaging import Delivery
    from lantern_runtime.settings import BrokerSettings
    from orders.repository import PaymentResults

logger = logging.getLogger(__name__)


def declare_publishers(broker: RabbitBroker) -> list[RabbitPublisher]:
    """What orders emits, each event from its outbox."""
    return [event_publisher(broker, event) for event in (OrderCreated, OrderConfirmed, OrderCancelled)]


def subscribe_payment_results(
    broker: RabbitBroker,
    settings: BrokerSettings,
    *,
    orders: PaymentResults,
    wake_relay: Callable[[], None],
) -> RabbitSubscriber:
    results = work_queue_subscriber(broker, ORDERS_QUEUE, settings)

    @results(filter=event_type(PaymentAuthorized))
    async def on_payment_authorized(event: PaymentAuthorized, delivery: CurrentDelivery) -> None:
        """Confirms the pending order: order.confirmed."""
        await settle(event.order_id, paid=True, reason=None, delivery=delivery)

    @results(filter=event_type(PaymentDeclined))
    async def on_payment_declined(event: PaymentDeclined, delivery: CurrentDelivery) -> None:
        """Cancels the pending order with the decline's reason: order.cancelled."""
        await settle(event.order_id, paid=False, reason=event.reason, delivery=delivery)

    async def settle(order_id: str, *, paid: bool, reason: str | None, delivery: Delivery) -> None:
        try:
            order = await orders.settle_payment(
                order_id, paid=paid, reason=reason, message_id=delivery.message_id
            )
        except LookupError as error:
            raise PoisonMessage(str(error)) from error
        except InvalidTransition as error:
            logger.warning("payment result ignored", extra={"order_id": order_id, "reason": str(error)})
            return
        if order is None:
            logger.info("duplicate payment result ignored", extra={"message_id": delivery.message_id})
            return
        logger.info("order settled", extra={"order_id": order_id, "status": order.status.value})
        wake_relay()

    return results
