"""Payment results settle orders; each is applied once, with its outcome event in one commit."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import Consumer, PoisonMessage
from order_flow.events import PaymentAuthorized, PaymentDeclined
from orders.domain import InvalidTransition

if TYPE_CHECKING:
    from lantern_runtime.messaging.consumer import Delivery
    from lantern_runtime.storage import OutboxRelay
    from orders.repository import OrderRepository

logger = logging.getLogger(__name__)


def payment_consumers(repository: OrderRepository, relay: OutboxRelay) -> dict[str, Consumer]:
    async def settle(order_id: str, *, paid: bool, reason: str | None, delivery: Delivery) -> None:
        try:
            order = await repository.settle_payment(
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
        relay.wake()

    async def on_authorized(event: PaymentAuthorized, delivery: Delivery) -> None:
        await settle(event.order_id, paid=True, reason=None, delivery=delivery)

    async def on_declined(event: PaymentDeclined, delivery: Delivery) -> None:
        await settle(event.order_id, paid=False, reason=event.reason, delivery=delivery)

    return {
        PaymentAuthorized.event_type: Consumer(PaymentAuthorized, on_authorized),
        PaymentDeclined.event_type: Consumer(PaymentDeclined, on_declined),
    }
