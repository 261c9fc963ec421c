"""order.created → bank authorization → payment.authorized or payment.declined;
order.cancelled → void at the bank (the saga's compensation)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import Consumer
from order_flow.events import OrderCancelled, OrderCreated, PaymentAuthorized, PaymentDeclined
from payments.bank_client import BankUnavailable

if TYPE_CHECKING:
    from lantern_runtime.messaging.consumer import Delivery
    from lantern_runtime.messaging.publisher import Event
    from lantern_runtime.storage import OutboxRelay
    from payments.bank_client import Authorization, BankClient
    from payments.repository import PaymentRepository

logger = logging.getLogger(__name__)


def _result(event: OrderCreated, authorization: Authorization) -> Event:
    if authorization.status == "approved":
        return PaymentAuthorized(
            order_id=event.order_id, authorization_id=authorization.authorization_id, amount=event.total
        )
    return PaymentDeclined(order_id=event.order_id, reason=authorization.reason or authorization.status)


def order_consumers(
    bank: BankClient, repository: PaymentRepository, relay: OutboxRelay
) -> dict[str, Consumer]:
    async def on_order_created(event: OrderCreated, delivery: Delivery) -> None:
        if await repository.applied(delivery.message_id):
            return
        try:
            authorization = await bank.authorize(event.order_id, event.total)
        except BankUnavailable as error:
            if not delivery.last_attempt:
                raise
            # Give the order a final answer rather than a dead letter. Should the bank have
            # authorized in a call whose answer was lost, order.cancelled voids it.
            reason = f"bank unavailable after {delivery.attempt} attempts: {error}"
            await _settle(
                event,
                delivery,
                "declined",
                None,
                reason,
                PaymentDeclined(order_id=event.order_id, reason=reason),
            )
            return
        result = _result(event, authorization)
        status = "authorized" if isinstance(result, PaymentAuthorized) else "declined"
        await _settle(event, delivery, status, authorization.authorization_id, authorization.reason, result)

    async def _settle(
        event: OrderCreated,
        delivery: Delivery,
        status: str,
        authorization_id: str | None,
        reason: str | None,
        result: Event,
    ) -> None:
        if await repository.settle(
            delivery.message_id,
            order_id=event.order_id,
            status=status,
            amount=event.total,
            authorization_id=authorization_id,
            reason=reason,
            result=result,
        ):
            relay.wake()
            logger.info("payment settled", extra={"order_id": event.order_id, "result": result.event_type})

    async def on_order_cancelled(event: OrderCancelled, delivery: Delivery) -> None:
        if await repository.applied(delivery.message_id):
            return
        await bank.void(event.order_id)
        await repository.mark_voided(delivery.message_id, event.order_id)
        logger.info("authorization voided", extra={"order_id": event.order_id})

    return {
        OrderCreated.event_type: Consumer(OrderCreated, on_order_created),
        OrderCancelled.event_type: Consumer(OrderCancelled, on_order_cancelled),
    }
