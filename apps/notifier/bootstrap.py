"""Wires notifier: broker, webhook client and the order outcome consumer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.lifecycle import EventDrivenService
from lantern_runtime.messaging import build_broker, subscribe
from lantern_runtime.resilience import UpstreamClient
from lantern_runtime.service import serve
from lantern_runtime.storage import create_engine
from notifier.api import notifications_router
from notifier.consumers import outcome_consumers
from notifier.migrations import HISTORY
from notifier.notifications import NotificationSender
from notifier.settings import NotifierSettings
from order_flow.topology import NOTIFIER_QUEUE, ORDER_FLOW

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "notifier"


def create_app(settings: NotifierSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    engine = create_engine(settings.database_url)
    broker = build_broker(settings, SERVICE_NAME)
    webhook = (
        UpstreamClient("webhook", settings.notifier_webhook_url, settings.webhook_upstream)
        if settings.notifier_webhook_url
        else None
    )
    sender = NotificationSender(engine, webhook)
    subscribe(broker, NOTIFIER_QUEUE, outcome_consumers(sender), settings)
    parts = EventDrivenService(
        broker, ORDER_FLOW, settings, engine=engine, migrations=HISTORY, clients=[webhook] if webhook else []
    )
    readiness = parts.readiness()

    app = service_app(
        SERVICE_NAME,
        subject_secret=settings.gateway_subject_secret,
        readiness=readiness,
        telemetry=telemetry,
        routers=[notifications_router(sender)],
        lifespan=parts.running,
        description="Notifies customers of their orders' outcomes.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, NotifierSettings, create_app)
