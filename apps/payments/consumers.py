"""order.created → bank authorization → payment.authorized or payment.declined."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import Consumer
from order_flow.events import OrderCreated, PaymentAuthorized, PaymentDeclined

if TYPE_CHECKING:
    from lantern_runtime.messaging import EventPublisher
    from lantern_runtime.messaging.consumer import Delivery
    from lantern_runtime.messaging.publisher import Event
    from payments.bank_client import BankClient

logger = logging.getLogger(__name__)


def order_consumers(bank: BankClient, publisher: EventPublisher) -> dict[str, Consumer]:
    async def on_order_created(event: OrderCreated, delivery: Delivery) -> None:
        authorization = await bank.authorize(event.order_id, event.total)
        result: Event
        if authorization.approved:
            result = PaymentAuthorized(
                order_id=event.order_id,
                authorization_id=authorization.authorization_id,
                amount=event.total,
            )
        else:
            result = PaymentDeclined(
                order_id=event.order_id, reason=authorization.reason or "declined by bank"
            )
        # A redelivered order.created yields the same message id, which orders applies once.
        await publisher.publish(
            result,
            message_id=f"{event.order_id}:{result.event_type}",
            correlation_id=event.order_id,
        )
        logger.info("payment settled", extra={"order_id": event.order_id, "result": result.event_type})

    return {OrderCreated.event_type: Consumer(OrderCreated, on_order_created)}
