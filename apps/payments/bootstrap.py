"""Wires payments: database, broker, outbox relay, bank client and consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.lifecycle import EventDrivenService
from lantern_runtime.messaging import (
    EventPublisher,
    build_broker,
    subscribe,
)
from lantern_runtime.resilience import UpstreamClient
from lantern_runtime.service import serve
from lantern_runtime.storage import OutboxRelay, RetentionRule, RetentionWorker, create_engine
from order_flow.topology import ORDER_FLOW, PAYMENTS_QUEUE
from payments.bank_client import BankClient
from payments.consumers import order_consumers
from payments.migrations import HISTORY
from payments.repository import PaymentRepository
from payments.settings import PaymentsSettings
from payments.tables import inbox, outbox

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "payments"


def create_app(settings: PaymentsSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    engine = create_engine(settings.database_url)
    broker = build_broker(settings, SERVICE_NAME)
    bank = UpstreamClient("bank", settings.bank_url, settings.bank_upstream)
    relay = OutboxRelay(
        engine,
        outbox,
        EventPublisher(broker, timeout=settings.publish_timeout),
        poll_seconds=settings.outbox_poll_seconds,
    )
    consumers = order_consumers(BankClient(bank), PaymentRepository(engine), relay)
    subscribe(broker, PAYMENTS_QUEUE, consumers, settings)
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
        lifespan=parts.running,
        description="Authorizes each new order's payment with the bank; voids it if the order is cancelled.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, PaymentsSettings, create_app)
