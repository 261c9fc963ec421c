"""The FastAPI app every service starts from: probes, server spans and problem+json errors
come with it."""

from __future__ import annotations

from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from lantern_runtime.health import health_router
from lantern_runtime.heap import freeze_startup_objects
from lantern_runtime.problems import install_problem_handlers
from lantern_runtime.subject import DEFAULT_MAX_AGE, TrustedSubject
from lantern_runtime.telemetry import instrument_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from fastapi import APIRouter
    from starlette.types import ASGIApp, Receive, Scope, Send

    from lantern_runtime.health import Readiness
    from lantern_runtime.telemetry import Telemetry


class ServiceApp(FastAPI):
    """A FastAPI app that can be wrapped in ASGI middleware outside all of its own: outside
    Starlette's error handling too, where no `add_middleware` reaches. The app stays the object
    that is served and configured; its ASGI entry point passes each call through the wrappers."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._served: ASGIApp = super().__call__

    def wrap_outside(self, middleware: Callable[[ASGIApp], ASGIApp]) -> None:
        """Wrap `middleware` around everything so far: the last wrapped is outermost."""
        self._served = middleware(self._served)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._served(scope, receive, send)


def service_app(
    name: str,
    *,
    readiness: Readiness,
    telemetry: Telemetry,
    routers: Iterable[APIRouter] = (),
    lifespan: Callable[[FastAPI], Any] | None = None,
    description: str = "",
    outer_middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = (),
    subject_secret: str | None = None,
    subject_max_age: float = DEFAULT_MAX_AGE,
    **fastapi_options: Any,
) -> ServiceApp:
    """`outer_middleware` wraps the app outside the server span, first listed outermost;
    `subject_secret` (GATEWAY_SUBJECT_SECRET) lets the app trust the gateway's X-Lantern-Subject
    signed for `name` within `subject_max_age` seconds (and refuse any other copy with 401);
    `fastapi_options` go to FastAPI (e.g. `version`, `openapi_tags`)."""
    # FastAPI's own telemetry stays off: instrument_app puts the server spans in.
    off = TelemetryConfig(tracing=False, metrics=False, logs=False, operation_spans=False)
    app = ServiceApp(
        title=name, description=description, lifespan=_settling(lifespan), telemetry=off, **fastapi_options
    )
    install_problem_handlers(app)
    app.add_middleware(TrustedSubject, secret=subject_secret, service=name, max_age=subject_max_age)
    app.include_router(health_router(readiness))
    for router in routers:
        app.include_router(router)
    instrument_app(app, telemetry)
    for wrap in reversed(outer_middleware):
        app.wrap_outside(wrap)
    return app


def _settling(lifespan: Callable[[FastAPI], Any] | None) -> Callable[[FastAPI], Any]:
    """The service's lifespan, freezing what start-up built once it has run. (A start-up that
    waits for its broker in the background freezes again when it has connected.)"""

    @asynccontextmanager
    async def settled(app: FastAPI) -> AsyncIterator[Any]:
        async with lifespan(app) if lifespan is not None else nullcontext() as state:
            freeze_startup_objects()
            yield state

    return settled
