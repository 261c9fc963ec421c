"""The FastAPI app every service starts from: probes and server spans come with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from lantern_runtime.health import health_router
from lantern_runtime.telemetry import instrument_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from fastapi import APIRouter

    from lantern_runtime.health import Readiness
    from lantern_runtime.telemetry import Telemetry


def service_app(
    name: str,
    *,
    readiness: Readiness,
    telemetry: Telemetry,
    routers: Iterable[APIRouter] = (),
    lifespan: Callable[[FastAPI], Any] | None = None,
    description: str = "",
) -> FastAPI:
    app = FastAPI(title=name, description=description, lifespan=lifespan)
    app.include_router(health_router(readiness))
    for router in routers:
        app.include_router(router)
    instrument_app(app, telemetry)
    return app
