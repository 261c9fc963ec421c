"""Runs a service's ASGI app under uvicorn, with a drain on SIGTERM and telemetry flushed last."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

from lantern_runtime.settings import ServiceSettings
from lantern_runtime.telemetry import setup_telemetry

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi import FastAPI

    from lantern_runtime.health import Readiness
    from lantern_runtime.telemetry import Telemetry

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

logger = logging.getLogger(__name__)

# The code uvicorn exits with when a lifespan's start-up fails; a background start-up that gives
# up ends the same way.
STARTUP_FAILURE = 3


class _DrainingServer(uvicorn.Server):
    """Turns readiness false the moment a stop signal arrives, before uvicorn stops accepting;
    stops (as on a signal, draining what started) when start-up gives up."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness) -> None:
        super().__init__(config)
        self._readiness = readiness
        readiness.on_give_up(self._stop)

    def _stop(self) -> None:
        # uvicorn's main loop checks this every tenth of a second, then shuts down as on SIGTERM.
        self.should_exit = True

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self._readiness.draining:
            logger.info("stop signal received; draining", extra={"signal": sig})
        self._readiness.draining = True
        # What uvicorn's own handler does, except remembering the signal: uvicorn re-raises it
        # after shutting down, which kills the process (unless it is PID 1) before run_service
        # flushes telemetry. A service that drained cleanly flushes, then exits 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def run_service(app: FastAPI, settings: ServiceSettings, readiness: Readiness, telemetry: Telemetry) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests get `shutdown_timeout` seconds to finish.

    The app's lifespan stops consumers (waiting for in-flight messages) after the server
    stops; telemetry is flushed after that, so the last spans are not lost. If start-up gave up
    (see lantern_runtime.startup), the process then exits with STARTUP_FAILURE.
    """
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=round(settings.shutdown_timeout),
        lifespan="on",
    )
    try:
        _DrainingServer(config, readiness).run()
    finally:
        telemetry.shutdown()
    if readiness.gave_up is not None:
        # Start-up logged why when it gave up; the status tells the orchestrator the start failed.
        raise SystemExit(STARTUP_FAILURE)


def serve(
    service_name: str,
    settings_type: type[SettingsT],
    create_app: Callable[[SettingsT, Telemetry], tuple[FastAPI, Readiness]],
) -> None:
    """A service's whole main(): settings from the environment, telemetry, app, serve."""
    settings = settings_type()
    telemetry = setup_telemetry(service_name, log_level=settings.log_level)
    app, readiness = create_app(settings, telemetry)
    run_service(app, settings, readiness, telemetry)
