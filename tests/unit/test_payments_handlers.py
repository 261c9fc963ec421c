"""payments' handlers in memory (FastStream's TestRabbitBroker), with fakes of the bank and the
ledger: what each publishes, retries or dead-letters, and what the ledger holds."""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

from faststream.rabbit import TestRabbitBroker

from lantern_runtime.messaging import EventPublisher, build_broker
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, QUEUE_HEADER, REASON_HEADER
from order_flow.events import OrderCancelled, OrderCreated, PaymentAuthorized, PaymentDeclined
from order_flow.topology import PAYMENTS_QUEUE
from payments.bank_client import Authorization, Bank, BankUnavailable
from payments.consumers import declare_publishers, subscribe_order_events
from payments.repository import PaymentLedger
from tests.unit.broker_doubles import (
    LAST,
    SETTINGS,
    Captured,
    Containing,
    OutboxRelayDouble,
    dead_letters,
    deliver,
    emitted,
    retries,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from faststream.rabbit import RabbitBroker

    from lantern_runtime.messaging import Event

CREATED = OrderCreated(order_id="o-1", customer_id="c-1", total=Decimal("39.80"))


class FakeBank(Bank):
    def __init__(self, *, approve: bool = True, unreachable: bool = False) -> None:
        self.approve = approve
        self.unreachable = unreachable
        self.authorized: list[tuple[str, Decimal]] = []
        self.voided: list[str] = []

    async def authorize(self, order_id: str, amount: Decimal) -> Authorization:
        if self.unreachable:
            raise BankUnavailable("connection refused")
        self.authorized.append((order_id, amount))
        if self.approve:
            return Authorization(f"a-{order_id}", "approved", None)
        return Authorization(f"a-{order_id}", "declined", "over the limit")

    async def void(self, order_id: str) -> None:
        if self.unreachable:
            raise BankUnavailable("connection refused")
        self.voided.append(order_id)


class FakeLedger(PaymentLedger):
    def __init__(self) -> None:
        self.inbox: set[str] = set()
        self.payments: dict[str, dict[str, object]] = {}
        self.outbox: list[Event] = []

    async def applied(self, message_id: str) -> bool:
        return message_id in self.inbox

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
        if message_id in self.inbox:
            return False
        self.inbox.add(message_id)
        self.payments[order_id] = {"status": status, "amount": amount, "reason": reason}
        self.outbox.append(result)
        return True

    async def mark_voided(self, message_id: str, order_id: str) -> bool:
        if message_id in self.inbox:
            return False
        self.inbox.add(message_id)
        self.payments.setdefault(order_id, {})["status"] = "voided"
        return True


@asynccontextmanager
async def payments(
    bank: FakeBank, ledger: FakeLedger
) -> AsyncIterator[tuple[RabbitBroker, OutboxRelayDouble]]:
    broker = build_broker(SETTINGS, "payments")
    relay = OutboxRelayDouble(ledger.outbox, EventPublisher(broker, publishers=declare_publishers(broker)))
    subscribe_order_events(broker, SETTINGS, bank=bank, ledger=ledger, wake_relay=relay.wake)
    async with TestRabbitBroker(broker) as test_broker:
        yield test_broker, relay


async def test_an_approved_order_is_authorized_and_payment_authorized_published() -> None:
    bank, ledger = FakeBank(), FakeLedger()
    async with payments(bank, ledger) as (broker, relay):
        await deliver(broker, CREATED, message_id="o-1:order.created")
        await relay.publish_pending()
        emitted(broker, PaymentAuthorized).mock.assert_called_once_with(
            {"order_id": "o-1", "authorization_id": "a-o-1", "amount": "39.80"}
        )
        emitted(broker, PaymentDeclined).mock.assert_not_called()
        retries(broker, PAYMENTS_QUEUE).mock.assert_not_called()
    assert bank.authorized == [("o-1", Decimal("39.80"))]
    assert ledger.payments["o-1"]["status"] == "authorized"
    assert relay.woken == 1


async def test_a_declined_authorization_publishes_payment_declined_with_the_banks_reason() -> None:
    ledger = FakeLedger()
    async with payments(FakeBank(approve=False), ledger) as (broker, relay):
        await deliver(broker, CREATED, message_id="o-1:order.created")
        await relay.publish_pending()
        emitted(broker, PaymentDeclined).mock.assert_called_once_with(
            {"order_id": "o-1", "reason": "over the limit"}
        )
    assert ledger.payments["o-1"]["status"] == "declined"


async def test_a_redelivered_order_created_is_applied_once() -> None:
    bank, ledger = FakeBank(), FakeLedger()
    async with payments(bank, ledger) as (broker, relay):
        await deliver(broker, CREATED, message_id="o-1:order.created")
        await deliver(broker, CREATED, message_id="o-1:order.created")
        await relay.publish_pending()
        emitted(broker, PaymentAuthorized).mock.assert_called_once()
    assert len(bank.authorized) == 1


async def test_an_unreachable_bank_is_retried_with_the_next_attempt_number() -> None:
    ledger = FakeLedger()
    async with payments(FakeBank(unreachable=True), ledger) as (broker, relay):
        await deliver(broker, CREATED, message_id="o-1:order.created", attempt=2)
        retry = retries(broker, PAYMENTS_QUEUE)
        retry.mock.assert_called_once_with({"order_id": "o-1", "customer_id": "c-1", "total": "39.80"})
        await retry.assert_called_once_with(headers={ATTEMPT_HEADER: 3})
        dead_letters(broker, PAYMENTS_QUEUE).mock.assert_not_called()
    assert ledger.payments == {}
    assert relay.woken == 0


async def test_on_the_last_attempt_an_unreachable_bank_declines_instead_of_dead_lettering() -> None:
    ledger = FakeLedger()
    async with payments(FakeBank(unreachable=True), ledger) as (broker, relay):
        await deliver(broker, CREATED, message_id="o-1:order.created", attempt=LAST)
        await relay.publish_pending()
        emitted(broker, PaymentDeclined).mock.assert_called_once_with(
            {"order_id": "o-1", "reason": f"bank unavailable after {LAST} attempts: connection refused"}
        )
        retries(broker, PAYMENTS_QUEUE).mock.assert_not_called()
        dead_letters(broker, PAYMENTS_QUEUE).mock.assert_not_called()
    assert ledger.payments["o-1"]["status"] == "declined"


async def test_a_body_that_is_not_an_order_created_is_dead_lettered_at_once_with_its_reason() -> None:
    async with payments(FakeBank(), FakeLedger()) as (broker, _relay):
        # Without a content type: the in-memory broker decodes what it records by it, and a
        # JSON content type on a body that is not JSON fails there (the live-broker tests send one).
        await deliver(
            broker, b"not json at all", event_type="order.created", message_id="p-1", content_type=None
        )
        await deliver(broker, b'{"order_id": "x"}', event_type="order.created", message_id="p-2")
        dead = dead_letters(broker, PAYMENTS_QUEUE)
        await dead.assert_any_call(
            b"not json at all",
            headers={
                REASON_HEADER: Containing("not a valid order.created"),
                ATTEMPT_HEADER: 1,
                QUEUE_HEADER: PAYMENTS_QUEUE.name,
            },
        )
        await dead.assert_called_with({"order_id": "x"}, headers={REASON_HEADER: Containing("customer_id")})
        assert dead.mock.call_count == 2
        retries(broker, PAYMENTS_QUEUE).mock.assert_not_called()


async def test_a_type_no_handler_takes_is_dead_lettered_in_the_messages_own_trace() -> None:
    # Sent from inside the sender's trace (see deliver): the dead letter keeps the traceparent it
    # arrived with as its origin, and is itself published in that trace.
    origin, current = Captured(), Captured()
    async with payments(FakeBank(), FakeLedger()) as (broker, _relay):
        await deliver(
            broker,
            b"{}",
            event_type="order.shipped",
            message_id="odd",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        await dead_letters(broker, PAYMENTS_QUEUE).assert_called_once_with(
            headers={
                REASON_HEADER: Containing("'order.shipped' has no handler on payments.order-events"),
                "x-lantern-origin-traceparent": origin,
                "traceparent": current,
            }
        )
    assert str(origin.value).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert str(current.value).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


async def test_a_malformed_attempt_header_is_poison() -> None:
    bank = FakeBank()
    async with payments(bank, FakeLedger()) as (broker, _relay):
        await deliver(broker, CREATED, message_id="o-1:order.created", attempt="abc")
        await dead_letters(broker, PAYMENTS_QUEUE).assert_called_once_with(
            headers={REASON_HEADER: Containing("x-lantern-attempt header is 'abc'"), ATTEMPT_HEADER: 1}
        )
    assert bank.authorized == []


async def test_order_cancelled_voids_at_the_bank_once() -> None:
    bank, ledger = FakeBank(), FakeLedger()
    cancelled = OrderCancelled(order_id="o-1", customer_id="c-1", reason="declined")
    async with payments(bank, ledger) as (broker, _relay):
        await deliver(broker, cancelled, message_id="o-1:order.cancelled")
        await deliver(broker, cancelled, message_id="o-1:order.cancelled")
    assert bank.voided == ["o-1"]
    assert ledger.payments["o-1"]["status"] == "voided"


async def test_a_void_the_bank_never_answers_is_dead_lettered_after_the_last_attempt() -> None:
    cancelled = OrderCancelled(order_id="o-1", customer_id="c-1", reason="declined")
    async with payments(FakeBank(unreachable=True), FakeLedger()) as (broker, _relay):
        await deliver(broker, cancelled, message_id="o-1:order.cancelled", attempt=LAST)
        retries(broker, PAYMENTS_QUEUE).mock.assert_not_called()
        await dead_letters(broker, PAYMENTS_QUEUE).assert_called_once_with(
            headers={REASON_HEADER: "BankUnavailable: connection refused", ATTEMPT_HEADER: LAST}
        )
