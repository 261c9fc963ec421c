"""Starting and stopping an event-driven service's parts in the one order that loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.instrumentation.utils import suppress_instrumentation

from lantern_runtime.health import Readiness
from lantern_runtime.messaging import broker_ready, connect_broker, redacted_url, stop_consuming
from lantern_runtime.startup import Dependency, Startup
from lantern_runtime.storage import database_ready, require_head

if TYPE_CHECKING:
    from faststream.rabbit import RabbitBroker
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.messaging import Topology
    from lantern_runtime.settings import BrokerSettings
    from lantern_runtime.storage import MigrationHistory, OutboxRelay


logger = logging.getLogger(__name__)


class Worker(Protocol):
    """A background loop of the service, such as a deadline check."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class Closable(Protocol):
    async def aclose(self) -> None: ...


@dataclass
class EventDrivenService:
    broker: RabbitBroker
    topology: Topology
    settings: BrokerSettings
    engine: AsyncEngine | None = None
    # The database's schema history: start-up waits until the database is at its head.
    migrations: MigrationHistory | None = None
    relay: OutboxRelay | None = None
    workers: Sequence[Worker] = ()
    clients: Sequence[Closable] = ()
    _readiness: Readiness = field(init=False)
    _startup: Startup = field(init=False)

    def __post_init__(self) -> None:
        checks = {"broker": broker_ready(self.broker)}
        if self.engine is not None:
            checks["database"] = database_ready(self.engine)
        self._readiness = Readiness(checks)
        self._startup = Startup(
            self._dependencies(),
            self._finish_starting,
            self._readiness,
            timeout=self.settings.startup_timeout,
        )

    def readiness(self) -> Readiness:
        return self._readiness

    def _dependencies(self) -> list[Dependency]:
        waits = []
        if self.engine is not None:
            # The schema check is the database's "connect": it needs the connection anyway. A
            # database not yet migrated is waited for like one not yet up (the migration runs
            # beside the service: an init container, `make run`), and each wait says why.
            waits.append(
                Dependency(
                    "database",
                    self.engine.url.render_as_string(hide_password=True),
                    self._check_schema,
                    attempt_timeout=10.0,
                )
            )
        # The broker's own connect timeout bounds each attempt. The topology is declared here,
        # not at finish, so a declaration failing on a flapping broker is retried too.
        waits.append(
            Dependency(
                "broker",
                redacted_url(self.settings.amqp_url),
                partial(connect_broker, self.broker, self.topology),
            )
        )
        return waits

    async def _check_schema(self) -> None:
        assert self.engine is not None
        # Start-up's own SQL belongs to no request: traced, each try would be a trace of its own.
        with suppress_instrumentation():
            if self.migrations is not None:
                await require_head(self.engine, self.migrations)
            else:
                await database_ready(self.engine)()

    async def _finish_starting(self) -> None:
        await self.broker.start()
        if self.relay is not None:
            self.relay.start()
        for worker in self.workers:
            worker.start()

    @asynccontextmanager
    async def running(self, _app: Any = None) -> AsyncIterator[None]:
        """The app's lifespan. Starting runs in the background (see lantern_runtime.startup), so
        the server answers its probes while the broker and database are awaited. Stopping: the
        start-up if still running, then workers, consumers (in-flight messages finish), the
        relay's last publish of what they committed, then connections. Each part's stop is
        harmless if it never started."""
        startup = asyncio.create_task(self._startup.run(), name="startup")
        try:
            yield
        finally:
            if not startup.done():
                logger.info("stopping before start-up finished; start-up cancelled")
                startup.cancel()
            # wait(), not await: the start-up's cancellation must not pass for the lifespan's own.
            await asyncio.wait([startup])
            for worker in self.workers:
                await worker.stop()
            await stop_consuming(self.broker)
            logger.info("drain: consumers stopped, in-flight messages done")
            if self.relay is not None:
                await self.relay.stop()
                logger.info("drain: outbox relay stopped")
            await self.broker.stop()
            logger.info("drain: broker closed")
            for client in self.clients:
                await client.aclose()
            if self.engine is not None:
                await self.engine.dispose()
