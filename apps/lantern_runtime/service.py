"""Runs a service's ASGI app under uvicorn, with a drain on SIGTERM and telemetry flushed last.

With LANTERN_RELOAD=true (the chart's dev sync, skaffold dev only) the service runs under
uvicorn's reloader instead: a changed .py file in the code directory restarts the service's
process, on the same listening socket, with no image build or pod restart.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from uvicorn.supervisors import ChangeReload

import lantern_runtime
from lantern_runtime.settings import ServiceSettings
from lantern_runtime.telemetry import setup_telemetry

if TYPE_CHECKING:
    from collections.abc import Callable
    from socket import socket

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


RELOAD_ENV = "LANTERN_RELOAD"
# Where Lantern's packages are (apps/ in a checkout, /opt/lantern/apps in the image): what the
# reloader watches.
CODE_DIR = Path(lantern_runtime.__file__).resolve().parents[1]


def reload_requested() -> bool:
    """LANTERN_RELOAD as a boolean; anything but true or false is refused, naming the variable."""
    value = os.environ.get(RELOAD_ENV, "").strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("", "false", "0"):
        return False
    raise ValueError(f"{RELOAD_ENV}={os.environ[RELOAD_ENV]!r}: expected true or false")


def run_service(
    app: FastAPI,
    settings: ServiceSettings,
    readiness: Readiness,
    telemetry: Telemetry,
    sockets: list[socket] | None = None,
) -> None:
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
        _DrainingServer(config, readiness).run(sockets=sockets)
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
    if reload_requested():
        serve_reloading(service_name, settings_type, create_app)
    else:
        _serve_once(service_name, settings_type, create_app)


def _serve_once(
    service_name: str,
    settings_type: type[SettingsT],
    create_app: Callable[[SettingsT, Telemetry], tuple[FastAPI, Readiness]],
    sockets: list[socket] | None = None,
) -> None:
    settings = settings_type()
    telemetry = setup_telemetry(service_name, log_level=settings.log_level)
    app, readiness = create_app(settings, telemetry)
    run_service(app, settings, readiness, telemetry, sockets=sockets)


def serve_reloading(
    service_name: str,
    settings_type: type[SettingsT],
    create_app: Callable[[SettingsT, Telemetry], tuple[FastAPI, Readiness]],
) -> None:
    """The service in a child process that uvicorn's reloader restarts when a .py file under
    CODE_DIR changes. The reloader holds the socket, so the port stays bound across restarts;
    each child imports the code afresh (a spawned process) and drains on SIGTERM as always."""
    settings = settings_type()
    logging.basicConfig(level=settings.log_level)
    # The app string only switches uvicorn's reload on: the child builds its own app.
    config = uvicorn.Config(
        service_name,
        host=settings.host,
        port=settings.port,
        log_config=None,
        reload=True,
        reload_dirs=[str(CODE_DIR)],
    )
    target = functools.partial(_serve_once, service_name, settings_type, create_app)
    ChangeReload(config, target=target, sockets=[config.bind_socket()]).run()
