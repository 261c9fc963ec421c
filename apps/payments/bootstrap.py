"""Wires payments: broker, bank client and the order.created consumer."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.http import service_client
from lantern_runtime.messaging import (
    EventPublisher,
    broker_ready,
    build_broker,
    start_broker,
    subscribe,
)
from lantern_runtime.service import serve
from order_flow.topology import ORDER_FLOW, PAYMENTS_QUEUE
from payments.bank_client import BankClient
from payments.consumers import order_consumers
from payments.settings import PaymentsSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "payments"


def create_app(settings: PaymentsSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    broker = build_broker(settings, SERVICE_NAME)
    http = service_client(settings.bank_url, timeout=settings.bank_timeout)
    publisher = EventPublisher(broker, timeout=settings.publish_timeout)
    subscribe(broker, PAYMENTS_QUEUE, order_consumers(BankClient(http), publisher), settings)

    readiness = Readiness({"broker": broker_ready(broker)})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_broker(broker, ORDER_FLOW, settings)
        try:
            yield
        finally:
            await broker.stop()
            await http.aclose()

    app = service_app(
        SERVICE_NAME,
        readiness=readiness,
        telemetry=telemetry,
        lifespan=lifespan,
        description="Authorizes the payment of each new order with the bank.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, PaymentsSettings, create_app)
