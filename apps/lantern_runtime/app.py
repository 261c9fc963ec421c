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
from lantern_runtime.subject import TrustedSubject
from lantern_runtime.telemetry import instrument_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from fastapi import APIRouter
    from starlette.types import ASGIApp

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
    outer_middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = (),
    subject_secret: str | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """`outer_middleware` wraps the app outside the server span, first listed outermost;
    `subject_secret` (GATEWAY_SUBJECT_SECRET) lets the app trust the gateway's signed
    X-Lantern-Subject; `fastapi_options` go to FastAPI (e.g. `version`, `openapi_tags`)."""
    # FastAPI's own telemetry stays off: instrument_app puts Lantern's server spans in.
    off = TelemetryConfig(tracing=False, metrics=False, logs=False, operation_spans=False)
    app = FastAPI(
        title=name, description=description, lifespan=_settling(lifespan), telemetry=off, **fastapi_options
    )
    install_problem_handlers(app)
    app.add_middleware(TrustedSubject, secret=subject_secret)
    app.include_router(health_router(readiness))
    for router in routers:
        app.include_router(router)
    instrument_app(app, telemetry)
    if outer_middleware:
        _wrap_outside(app, outer_middleware)
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


def _wrap_outside(app: FastAPI, wrappers: Sequence[Callable[[ASGIApp], ASGIApp]]) -> None:
    # instrument_app puts the server span outside the user middleware by replacing
    # build_middleware_stack; wrapping that result is the only way to get further out.
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = build()
        for wrap in reversed(wrappers):
            stack = wrap(stack)
        return stack

    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010 - mypy forbids assigning a method
