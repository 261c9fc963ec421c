"""Starting and stopping an event-driven service's parts in the one order that loses nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lantern_runtime.health import Readiness
from lantern_runtime.messaging import broker_ready, start_broker, stop_consuming
from lantern_runtime.storage import database_ready

if TYPE_CHECKING:
    from faststream.rabbit import RabbitBroker
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.messaging import Topology
    from lantern_runtime.settings import BrokerSettings
    from lantern_runtime.storage import OutboxRelay


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
    metadata: MetaData | None = None
    relay: OutboxRelay | None = None
    workers: Sequence[Worker] = ()
    clients: Sequence[Closable] = ()

    def readiness(self) -> Readiness:
        checks = {"broker": broker_ready(self.broker)}
        if self.engine is not None:
            checks["database"] = database_ready(self.engine)
        return Readiness(checks)

    @asynccontextmanager
    async def running(self, _app: Any = None) -> AsyncIterator[None]:
        """The app's lifespan. Stopping: workers, then consumers (in-flight messages finish),
        then the relay's last publish of what they committed, then connections."""
        if self.engine is not None and self.metadata is not None:
            async with self.engine.begin() as conn:
                await conn.run_sync(self.metadata.create_all)
        await start_broker(self.broker, self.topology, self.settings)
        if self.relay is not None:
            self.relay.start()
        for worker in self.workers:
            worker.start()
        try:
            yield
        finally:
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
