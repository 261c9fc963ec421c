"""Wires notifier: broker, webhook client and the order outcome consumer."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.lifecycle import EventDrivenService
from lantern_runtime.messaging import asyncapi_router, build_broker, messaging_app
from lantern_runtime.resilience import UpstreamClient
from lantern_runtime.service import serve
from lantern_runtime.storage import create_engine
from notifier.api import notifications_router
from notifier.consumers import subscribe_order_outcomes
from notifier.migrations import HISTORY
from notifier.notifications import NotificationSender
from notifier.settings import NotifierSettings
from order_flow.topology import ORDER_FLOW

if TYPE_CHECKING:
    from fastapi import FastAPI
    from faststream import FastStream
    from faststream.rabbit import RabbitBroker

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "notifier"
DESCRIPTION = "Notifies customers of their orders' outcomes."


def create_app(settings: NotifierSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    engine = create_engine(settings.database_url)
    broker = build_broker(settings, SERVICE_NAME)
    webhook: UpstreamClient | None = None
    path = ""
    if settings.notifier_webhook_url:
        url = urlsplit(settings.notifier_webhook_url)
        origin, path = (
            urlunsplit((url.scheme, url.netloc, "", "", "")),
            urlunsplit(("", "", url.path, url.query, "")),
        )
        webhook = UpstreamClient("webhook", origin, settings.webhook_upstream)
    sender = NotificationSender(engine, webhook, path)
    subscribe_order_outcomes(broker, settings, notifications=sender)
    messaging = _messaging_app(broker)
    parts = EventDrivenService(
        broker, ORDER_FLOW, settings, engine=engine, migrations=HISTORY, clients=[webhook] if webhook else []
    )
    readiness = parts.readiness()

    app = service_app(
        SERVICE_NAME,
        subject_secret=settings.gateway_subject_secret,
        readiness=readiness,
        telemetry=telemetry,
        routers=[
            notifications_router(sender),
            *([asyncapi_router(messaging)] if settings.asyncapi_docs else []),
        ],
        lifespan=parts.running,
        description=DESCRIPTION,
    )
    return app, readiness


def _messaging_app(broker: RabbitBroker) -> FastStream:
    return messaging_app(broker, title=SERVICE_NAME, description=DESCRIPTION)


def asyncapi() -> FastStream:
    """`faststream docs gen notifier.bootstrap:asyncapi --factory`: the messaging of a service built
    from the default settings (the environment is not read), without connecting to anything."""
    settings = NotifierSettings.model_construct()
    broker = build_broker(settings, SERVICE_NAME)
    sender = NotificationSender(create_engine(settings.database_url), None)
    subscribe_order_outcomes(broker, settings, notifications=sender)
    return _messaging_app(broker)


def main() -> None:
    serve(SERVICE_NAME, NotifierSettings, create_app)
