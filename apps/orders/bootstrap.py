"""Wires orders: database, broker, outbox relay, consumers and HTTP routes."""

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
from lantern_runtime.service import serve
from lantern_runtime.storage import OutboxRelay, RetentionRule, RetentionWorker, create_engine
from order_flow.topology import ORDER_FLOW, ORDERS_QUEUE
from orders.api import orders_router
from orders.consumers import payment_consumers
from orders.deadline import PaymentDeadline
from orders.migrations import HISTORY
from orders.repository import OrderRepository
from orders.settings import OrdersSettings
from orders.tables import inbox, outbox

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "orders"


def create_app(settings: OrdersSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    engine = create_engine(settings.database_url)
    broker = build_broker(settings, SERVICE_NAME)
    repository = OrderRepository(engine)
    relay = OutboxRelay(
        engine,
        outbox,
        EventPublisher(broker, timeout=settings.publish_timeout),
        poll_seconds=settings.outbox_poll_seconds,
    )
    deadline = PaymentDeadline(repository, relay, seconds=settings.payment_deadline_seconds)
    subscribe(broker, ORDERS_QUEUE, payment_consumers(repository, relay), settings)

    policy = settings.retention
    retention = RetentionWorker(
        engine, [RetentionRule.sent_outbox(outbox, policy), RetentionRule.inbox(inbox, policy)], policy
    )
    parts = EventDrivenService(
        broker,
        ORDER_FLOW,
        settings,
        engine=engine,
        migrations=HISTORY,
        relay=relay,
        workers=[deadline, retention],
    )
    readiness = parts.readiness()

    app = service_app(
        SERVICE_NAME,
        subject_secret=settings.gateway_subject_secret,
        readiness=readiness,
        telemetry=telemetry,
        routers=[orders_router(repository, relay)],
        lifespan=parts.running,
        description="Accepts orders and follows them to a final state.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, OrdersSettings, create_app)
