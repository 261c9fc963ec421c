"""Wires gateway: one upstream client per service it fronts."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from gateway.api import public_router
from gateway.settings import GatewaySettings
from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.resilience import UpstreamClient
from lantern_runtime.service import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "gateway"


def create_app(settings: GatewaySettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    orders = UpstreamClient("orders", settings.orders_url, settings.orders_upstream)
    readiness = Readiness({})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await orders.aclose()

    app = service_app(
        SERVICE_NAME,
        readiness=readiness,
        telemetry=telemetry,
        routers=[public_router(orders)],
        lifespan=lifespan,
        description="Lantern's public API.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, GatewaySettings, create_app)
