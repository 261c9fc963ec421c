"""The outbox relay: publishes committed events with broker confirms, then marks them sent.

A commit wakes the relay at once; a poll catches what a crash left behind. Rows are published
in the trace context saved with them, so the trace connects even after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import select, update

from orders.tables import outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.messaging import EventPublisher

logger = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: EventPublisher,
        *,
        poll_seconds: float,
        batch_size: int = 100,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        # One last pass, so events committed during the drain still leave before exit.
        with contextlib.suppress(Exception):
            await self.publish_pending()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
            try:
                while await self.publish_pending() == self._batch_size:
                    pass
            except Exception:
                logger.exception("outbox relay could not publish; will retry")

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many were sent."""
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(outbox)
                    .where(outbox.c.sent_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self._batch_size)
                    # Replicas share the table; each row is published by the one that locks it.
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                token = otel_context.attach(propagate.extract(row.trace_headers or {}))
                try:
                    await self._publisher.publish_raw(
                        row.body.encode(),
                        event_type=row.event_type,
                        message_id=row.message_id,
                        correlation_id=row.correlation_id,
                    )
                finally:
                    otel_context.detach(token)
                await conn.execute(
                    update(outbox).where(outbox.c.id == row.id).values(sent_at=datetime.now(UTC))
                )
        return len(rows)
