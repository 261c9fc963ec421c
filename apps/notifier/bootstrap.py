"""Wires notifier: broker, webhook client and the order outcome consumer."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.http import service_client
from lantern_runtime.messaging import broker_ready, build_broker, start_broker, subscribe
from lantern_runtime.service import serve
from notifier.api import notifications_router
from notifier.consumers import outcome_consumers
from notifier.notifications import Outbox
from notifier.settings import NotifierSettings
from order_flow.topology import NOTIFIER_QUEUE, ORDER_FLOW

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "notifier"


def create_app(settings: NotifierSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    broker = build_broker(settings, SERVICE_NAME)
    webhook = (
        service_client(settings.notifier_webhook_url, timeout=settings.webhook_timeout)
        if settings.notifier_webhook_url
        else None
    )
    outbox = Outbox(webhook)
    subscribe(broker, NOTIFIER_QUEUE, outcome_consumers(outbox), settings)
    readiness = Readiness({"broker": broker_ready(broker)})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_broker(broker, ORDER_FLOW, settings)
        try:
            yield
        finally:
            await broker.stop()
            if webhook is not None:
                await webhook.aclose()

    app = service_app(
        SERVICE_NAME,
        readiness=readiness,
        telemetry=telemetry,
        routers=[notifications_router(outbox)],
        lifespan=lifespan,
        description="Notifies customers of their orders' outcomes.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, NotifierSettings, create_app)
