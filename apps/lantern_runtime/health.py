"""Liveness and readiness probes: /healthz says the process runs, /readyz that it can do its work."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.utils import suppress_instrumentation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping


class Readiness:
    """The named checks a service needs to pass, plus its state as the runner sees it: still
    starting (and waiting for what), gave up starting, or draining after SIGTERM."""

    def __init__(self, checks: Mapping[str, Callable[[], Awaitable[bool]]], *, timeout: float = 2.0) -> None:
        self._checks = dict(checks)
        self._timeout = timeout
        self.draining = False
        # Set by a background start-up: "starting" and each dependency it still waits for.
        self.starting: list[str] = []
        # Why start-up gave up; the runner then stops the server and exits non-zero.
        self.gave_up: str | None = None
        self._on_give_up: list[Callable[[], None]] = []

    def give_up(self, reason: str) -> None:
        """Start-up cannot finish: tell whoever runs the service to stop it."""
        self.gave_up = reason
        for stop in self._on_give_up:
            stop()

    def on_give_up(self, stop: Callable[[], None]) -> None:
        self._on_give_up.append(stop)

    async def failing(self) -> list[str]:
        if self.draining:
            return ["draining"]
        if self.starting:
            # The checks would only fail too, and a broker ping mid-connect helps no one.
            return list(self.starting)
        names = list(self._checks)
        results = await asyncio.gather(
            *(self._run(self._checks[name]) for name in names), return_exceptions=True
        )
        return [name for name, ok in zip(names, results, strict=True) if ok is not True]

    async def _run(self, check: Callable[[], Awaitable[bool]]) -> bool:
        # Probes are not traced (the server instrumentation leaves them out): nor is what they
        # ask, or every probe's SQL would be a trace of its own.
        with suppress_instrumentation():
            return await asyncio.wait_for(check(), self._timeout)


def health_router(readiness: Readiness) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        failing = await readiness.failing()
        if failing:
            return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
        return JSONResponse({"status": "ready"})

    return router
