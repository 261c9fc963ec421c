"""Wires payments: database, broker, outbox relay, bank client and consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.lifecycle import EventDrivenService
from lantern_runtime.messaging import EventPublisher, asyncapi_router, build_broker, messaging_app
from lantern_runtime.resilience import UpstreamClient
from lantern_runtime.service import serve
from lantern_runtime.storage import OutboxRelay, RetentionRule, RetentionWorker, create_engine
from order_flow.topology import ORDER_FLOW
from payments.bank_client import BankClient
from payments.consumers import declare_publishers, subscribe_order_events
from payments.migrations import HISTORY
from payments.repository import PaymentRepository
from payments.settings import PaymentsSettings
from payments.tables import inbox, outbox

if TYPE_CHECKING:
    from fastapi import FastAPI
    from faststream import FastStream
    from faststream.rabbit import RabbitBroker

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "payments"
DESCRIPTION = "Authorizes each new order's payment with the bank; voids it if the order is cancelled."


def create_app(settings: PaymentsSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    engine = create_engine(settings.database_url)
    broker = build_broker(settings, SERVICE_NAME)
    bank = UpstreamClient("bank", settings.bank_url, settings.bank_upstream)
    publishers = declare_publishers(broker)
    relay = OutboxRelay(
        engine,
        outbox,
        EventPublisher(broker, timeout=settings.publish_timeout, publishers=publishers),
        poll_seconds=settings.outbox_poll_seconds,
    )
    subscribe_order_events(
        broker, settings, bank=BankClient(bank), ledger=PaymentRepository(engine), wake_relay=relay.wake
    )
    messaging = _messaging_app(broker)
    policy = settings.retention
    retention = RetentionWorker(
        engine, [RetentionRule.sent_outbox(outbox, policy), RetentionRule.inbox(inbox, policy)], policy
    )
    # The ledger (payments) is business data and is kept; only delivered events and old ids go.
    parts = EventDrivenService(
        broker,
        ORDER_FLOW,
        settings,
        engine=engine,
        migrations=HISTORY,
        relay=relay,
        workers=[retention],
        clients=[bank],
    )
    readiness = parts.readiness()

    app = service_app(
        SERVICE_NAME,
        subject_secret=settings.gateway_subject_secret,
        readiness=readiness,
        telemetry=telemetry,
        routers=[asyncapi_router(messaging)] if settings.asyncapi_docs else [],
        lifespan=parts.running,
        description=DESCRIPTION,
    )
    return app, readiness


def _messaging_app(broker: RabbitBroker) -> FastStream:
    return messaging_app(broker, title=SERVICE_NAME, description=DESCRIPTION)


def asyncapi() -> FastStream:
    """`faststream docs gen payments.bootstrap:asyncapi --factory`: the messaging of a service built
    from the default settings (the environment is not read), without connecting to anything."""
    settings = PaymentsSettings.model_construct()
    broker = build_broker(settings, SERVICE_NAME)
    declare_publishers(broker)
    bank = BankClient(UpstreamClient("bank", settings.bank_url, settings.bank_upstream))
    ledger = PaymentRepository(create_engine(settings.database_url))
    subscribe_order_events(broker, settings, bank=bank, ledger=ledger, wake_relay=lambda: None)
    return _messaging_app(broker)


def main() -> None:
    serve(SERVICE_NAME, PaymentsSettings, create_app)
