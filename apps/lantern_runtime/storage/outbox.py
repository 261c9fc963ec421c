"""The transactional outbox: events are written in the transaction of the change they announce,
and a relay publishes them with broker confirms, then marks them sent.

A commit wakes the relay at once; a poll catches what a crash left behind. Rows are published
in the trace context saved with them, so the trace connects even after a restart.

No transaction is held while publishing: a batch is claimed with a short lease in one
statement, published, then marked sent. A relay that dies mid-batch leaves its lease to
expire, and another (or the next start) publishes the rest; consumers drop the duplicates.

A row the broker can never take as it is, a body over BROKER_MAX_MESSAGE_BYTES, is parked: left
unsent under a long lease (`park_seconds`), logged as an error naming its size and the limit, and
the rows after it go on. A failure that may pass (the broker down, a nack) stops the batch
instead, and the next pass retries from that row, so events keep their order.

After each pass the relay counts what is still unsent, for the backlog gauges (outbox_backlog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    or_,
    select,
    update,
)

from lantern_runtime.messaging.publisher import MessageTooLarge
from lantern_runtime.storage.outbox_backlog import Backlog, backlog_gauge

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from lantern_runtime.messaging.publisher import Event, EventPublisher

logger = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("message_id", String(200), nullable=False, unique=True),
        Column("event_type", String(100), nullable=False),
        Column("correlation_id", String(200)),
        Column("body", Text, nullable=False),
        # The trace context of the transaction that wrote the row, so the publish joins its trace.
        Column("trace_headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), index=True),
        # Until then the row is being published by the relay that claimed it.
        Column("claimed_until", DateTime(timezone=True)),
    )


async def add_to_outbox(
    conn: AsyncConnection, outbox: Table, event: Event, *, message_id: str, correlation_id: str
) -> None:
    trace_headers: dict[str, str] = {}
    propagate.inject(trace_headers)
    await conn.execute(
        insert(outbox).values(
            message_id=message_id,
            event_type=event.event_type,
            correlation_id=correlation_id,
            body=event.model_dump_json(),
            trace_headers=trace_headers,
            created_at=datetime.now(UTC),
        )
    )


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Table,
        publisher: EventPublisher,
        *,
        poll_seconds: float,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        park_seconds: float = 3600.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._publisher = publisher
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._lease = timedelta(seconds=lease_seconds)
        # Until a parked row is tried again: once an hour, in case the limit was raised meanwhile.
        self._park = timedelta(seconds=park_seconds)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backlog = backlog_gauge(meter_provider)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Let the batch in hand finish, publish what the drain committed, then return.

        The loop is asked to stop, never cancelled: a cancel could land inside a database
        transaction and leave its SQLite write lock held, stalling the last pass behind it.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task

    async def _run(self) -> None:
        while True:
            # Read before the pass: a stop asked for during it still gets one more, last pass.
            stopping = self._stopping
            if not stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                self._wake.clear()
            try:
                # The relay's own SQL belongs to no request: left untraced, it would be a trace of
                # its own every poll. Each publish runs in its row's trace context all the same.
                with suppress_instrumentation():
                    while await self.publish_pending() == self._batch_size:
                        pass
            except Exception as error:
                if stopping:
                    logger.warning("outbox rows left unsent at shutdown; the next start sends them")
                else:
                    logger.warning("outbox relay could not publish; will retry", extra={"error": str(error)})
            # Also after a failed pass: rows piling up while the broker is away is the backlog.
            try:
                with suppress_instrumentation():
                    await self.count_backlog()
            except Exception as error:
                logger.warning("outbox backlog not counted; its age grows", extra={"error": str(error)})
            if stopping:
                return

    async def count_backlog(self) -> Backlog:
        """Count the unsent rows and note the oldest's write time, for the backlog gauges."""
        outbox = self._outbox
        async with self._engine.connect() as conn:
            # sent_at is indexed, so this reads the unsent rows only, not the sent history.
            row = (
                await conn.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
                )
            ).one()
        backlog = Backlog(int(row[0]), _aware(row[1]))
        self._backlog.last = backlog
        return backlog

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many were sent or parked. Raises on the
        first row the broker does not take, after marking those before it sent."""
        rows = await self._claim()
        sent: list[int] = []
        parked: list[int] = []
        try:
            for row in rows:
                token = otel_context.attach(propagate.extract(row.trace_headers or {}))
                try:
                    await self._publisher.publish_raw(
                        row.body.encode(),
                        event_type=row.event_type,
                        message_id=row.message_id,
                        correlation_id=row.correlation_id,
                    )
                except MessageTooLarge as error:
                    logger.error(
                        "outbox row too large to publish; parked",
                        extra={
                            "message_id": row.message_id,
                            "event_type": row.event_type,
                            "size": error.size,
                            "limit": error.limit,
                            "retry_seconds": self._park.total_seconds(),
                            "error": str(error),
                        },
                    )
                    parked.append(row.id)
                    continue
                finally:
                    otel_context.detach(token)
                sent.append(row.id)
        finally:
            done = {*sent, *parked}
            await self._settle(sent, [row.id for row in rows if row.id not in done], parked)
        return len(sent) + len(parked)

    async def _claim(self) -> list[Any]:
        outbox = self._outbox
        now = datetime.now(UTC)
        due = (
            select(outbox.c.id)
            .where(
                outbox.c.sent_at.is_(None),
                or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            )
            .order_by(outbox.c.id)
            .limit(self._batch_size)
            # Replicas share the table; on PostgreSQL each row goes to the one that locks it.
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self._engine.begin() as conn:
            claimed = await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(due))
                .values(claimed_until=now + self._lease)
                .returning(*outbox.c)
            )
            return sorted(claimed.all(), key=lambda row: row.id)

    async def _settle(self, sent: list[int], unsent: list[int], parked: list[int]) -> None:
        outbox = self._outbox
        if not sent and not unsent and not parked:
            return
        async with self._engine.begin() as conn:
            if sent:
                await conn.execute(
                    update(outbox).where(outbox.c.id.in_(sent)).values(sent_at=datetime.now(UTC))
                )
            if unsent:
                # Released at once, so the next pass retries them without waiting out the lease.
                await conn.execute(update(outbox).where(outbox.c.id.in_(unsent)).values(claimed_until=None))
            if parked:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(parked))
                    .values(claimed_until=datetime.now(UTC) + self._park)
                )


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands a timezone-aware column back naive; it was written in UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
