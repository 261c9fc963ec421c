"""payments on RabbitMQ: order.created → bank authorization → payment.authorized or
payment.declined (through its outbox); order.cancelled → void at the bank (the saga's
compensation)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lantern_runtime.messaging import CurrentDelivery, event_publisher, event_type, work_queue_subscriber
from order_flow.events import OrderCancelled, OrderCreated, PaymentAuthorized, PaymentDeclined
from order_flow.topology import PAYMENTS_QUEUE
from payments.bank_client import BankUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.publisher import RabbitPublisher
    from faststream.rabbit.subscriber import RabbitSubscriber

    from lantern_runtime.messaging import Delivery, Event
    from lantern_runtime.settings import BrokerSettings
    from payments.bank_client import Authorization, Bank
    from payments.repository import PaymentLedger

logger = logging.getLogger(__name__)


def declare_publishers(broker: RabbitBroker) -> list[RabbitPublisher]:
    """What payments emits, each result from its outbox."""
    return [event_publisher(broker, event) for event in (PaymentAuthorized, PaymentDeclined)]


def _result(event: OrderCreated, authorization: Authorization) -> Event:
    if authorization.status == "approved":
        return PaymentAuthorized(
            order_id=event.order_id, authorization_id=authorization.authorization_id, amount=event.total
        )
    return PaymentDeclined(order_id=event.order_id, reason=authorization.reason or authorization.status)


def subscribe_order_events(
    broker: RabbitBroker,
    settings: BrokerSettings,
    *,
    bank: Bank,
    ledger: PaymentLedger,
    wake_relay: Callable[[], None],
) -> RabbitSubscriber:
    order_events = work_queue_subscriber(broker, PAYMENTS_QUEUE, settings)

    @order_events(filter=event_type(OrderCreated))
    async def on_order_created(event: OrderCreated, delivery: CurrentDelivery) -> None:
        """Asks the bank to authorize the order's total (the order id as idempotency key):
        payment.authorized or payment.declined. On the last attempt an unreachable bank is a
        decline, not a dead letter."""
        if await ledger.applied(delivery.message_id):
            return
        try:
            authorization = await bank.authorize(event.order_id, event.total)
        except BankUnavailable as error:
            if not delivery.last_attempt:
                raise
            # Give the order a final answer rather than a dead letter. Should the bank have
            # authorized in a call whose answer was lost, order.cancelled voids it.
            reason = f"bank unavailable after {delivery.attempt} attempts: {error}"
            declined = PaymentDeclined(order_id=event.order_id, reason=reason)
            await settle(event, delivery, "declined", None, reason, declined)
            return
        result = _result(event, authorization)
        status = "authorized" if isinstance(result, PaymentAuthorized) else "declined"
        await settle(event, delivery, status, authorization.authorization_id, authorization.reason, result)

    @order_events(filter=event_type(OrderCancelled))
    async def on_order_cancelled(event: OrderCancelled, delivery: CurrentDelivery) -> None:
        """Voids the order's authorization at the bank, if it has one."""
        if await ledger.applied(delivery.message_id):
            return
        await bank.void(event.order_id)
        await ledger.mark_voided(delivery.message_id, event.order_id)
        logger.info("authorization voided", extra={"order_id": event.order_id})

    async def settle(
        event: OrderCreated,
        delivery: Delivery,
        status: str,
        authorization_id: str | None,
        reason: str | None,
        result: Event,
    ) -> None:
        if await ledger.settle(
            delivery.message_id,
            order_id=event.order_id,
            status=status,
            amount=event.total,
            authorization_id=authorization_id,
            reason=reason,
            result=result,
        ):
            wake_relay()
            logger.info("payment settled", extra={"order_id": event.order_id, "result": result.event_type})

    return order_events
