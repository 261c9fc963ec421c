"""Wires orders: database, broker, outbox relay, consumers and HTTP routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.lifecycle import EventDrivenService
from lantern_runtime.messaging import EventPublisher, asyncapi_router, build_broker, messaging_app
from lantern_runtime.service import serve
from lantern_runtime.storage import OutboxRelay, RetentionRule, RetentionWorker, create_engine
from order_flow.topology import ORDER_FLOW
from orders.api import orders_router
from orders.consumers import declare_publishers, subscribe_payment_results
from orders.deadline import PaymentDeadline
from orders.migrations import HISTORY
from orders.repository import OrderRepository
from orders.settings import OrdersSettings
from orders.tables import inbox, outbox

if TYPE_CHECKING:
    from fastapi import FastAPI
    from faststream import FastStream
    from faststream.rabbit import RabbitBroker

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "orders"
DESCRIPTION = "Accepts orders and follows them to a final state."


def create_app(settings: OrdersSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    engine = create_engine(settings.database_url)
    broker = build_broker(settings, SERVICE_NAME)
    repository = OrderRepository(engine)
    publishers = declare_publishers(broker)
    relay = OutboxRelay(
        engine,
        outbox,
        EventPublisher(broker, timeout=settings.publish_timeout, publishers=publishers),
        poll_seconds=settings.outbox_poll_seconds,
    )
    deadline = PaymentDeadline(repository, relay, seconds=settings.payment_deadline_seconds)
    subscribe_payment_results(broker, settings, orders=repository, wake_relay=relay.wake)
    messaging = _messaging_app(broker)

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
        subject_max_age=settings.gateway_subject_max_age,
        readiness=readiness,
        telemetry=telemetry,
        routers=[
            orders_router(repository, relay),
            *([asyncapi_router(messaging)] if settings.asyncapi_docs else []),
        ],
        lifespan=parts.running,
        description=DESCRIPTION,
    )
    return app, readiness


def _messaging_app(broker: RabbitBroker) -> FastStream:
    return messaging_app(broker, title=SERVICE_NAME, description=DESCRIPTION)


def asyncapi() -> FastStream:
    """`faststream docs gen orders.bootstrap:asyncapi --factory`: the messaging of a service built
    from the default settings (the environment is not read), without connecting to anything."""
    settings = OrdersSettings.model_construct()
    broker = build_broker(settings, SERVICE_NAME)
    declare_publishers(broker)
    repository = OrderRepository(create_engine(settings.database_url))
    subscribe_payment_results(broker, settings, orders=repository, wake_relay=lambda: None)
    return _messaging_app(broker)


def main() -> None:
    serve(SERVICE_NAME, OrdersSettings, create_app)
