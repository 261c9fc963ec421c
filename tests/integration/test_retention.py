"""Retention on SQLite and PostgreSQL: sent outbox rows and inbox ids older than their window go,
in small batches, each counted and logged; newer ones and unsent rows stay; a redelivery inside
the window is still recognised; and a batch never waits for a row the hot path holds."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import insert, select, update

from lantern_runtime.storage import RetentionPolicy, RetentionRule, RetentionWorker
from payments.repository import PaymentRepository
from payments.tables import inbox, metadata, outbox
from tests.integration.conftest import engine_with

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

DAY = timedelta(days=1)
NOW = datetime.now(UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database_url, metadata) as engine:
        yield engine


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meters(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


def retention(engine: AsyncEngine, meters: MeterProvider, **policy: float) -> RetentionWorker:
    chosen = RetentionPolicy(**{"batch_size": 3, "batch_pause_seconds": 0, **policy})
    return RetentionWorker(
        engine,
        [RetentionRule.sent_outbox(outbox, chosen), RetentionRule.inbox(inbox, chosen)],
        chosen,
        meter_provider=meters,
    )


def counted(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, object], ...], int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted(point.attributes.items())): point.value  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


async def add_inbox(engine: AsyncEngine, ids: list[str], age: timedelta) -> None:
    async with engine.begin() as conn:
        for message_id in ids:
            await conn.execute(insert(inbox).values(message_id=message_id, processed_at=NOW - age))


async def add_outbox(
    engine: AsyncEngine, ids: list[str], *, created: timedelta, sent: timedelta | None
) -> None:
    async with engine.begin() as conn:
        for message_id in ids:
            await conn.execute(
                insert(outbox).values(
                    message_id=message_id,
                    event_type="payment.authorized",
                    correlation_id="o",
                    body="{}",
                    trace_headers={},
                    created_at=NOW - created,
                    sent_at=None if sent is None else NOW - sent,
                )
            )


async def ids_in(engine: AsyncEngine) -> tuple[set[str], set[str]]:
    async with engine.connect() as conn:
        kept_inbox = set((await conn.execute(select(inbox.c.message_id))).scalars())
        kept_outbox = set((await conn.execute(select(outbox.c.message_id))).scalars())
    return kept_inbox, kept_outbox


async def test_rows_older_than_their_window_go_in_batches_and_newer_and_unsent_ones_stay(
    engine: AsyncEngine, meters: MeterProvider, reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    await add_inbox(engine, [f"old-{n}" for n in range(7)], age=8 * DAY)
    await add_inbox(engine, ["recent-0", "recent-1"], age=6 * DAY)
    await add_outbox(engine, [f"sent-{n}" for n in range(5)], created=2 * DAY, sent=2 * DAY)
    await add_outbox(engine, ["sent-lately"], created=2 * DAY, sent=timedelta(hours=1))
    # Never published (the broker was away for days): not the relay's to lose.
    await add_outbox(engine, ["unsent-0", "unsent-1"], created=3 * DAY, sent=None)

    with caplog.at_level(logging.INFO, logger="lantern_runtime.storage.retention"):
        deleted = await retention(engine, meters).run_once()

    assert deleted == {"outbox": 5, "processed_messages": 7}
    assert await ids_in(engine) == ({"recent-0", "recent-1"}, {"sent-lately", "unsent-0", "unsent-1"})
    assert counted(reader, "lantern.retention.deleted") == {
        (("db.collection.name", "outbox"),): 5,
        (("db.collection.name", "processed_messages"),): 7,
    }
    assert counted(reader, "lantern.retention.passes") == {
        (("db.collection.name", "outbox"), ("outcome", "ok")): 1,
        (("db.collection.name", "processed_messages"), ("outcome", "ok")): 1,
    }
    lines = {r.table: r for r in caplog.records if r.message.startswith("retention: deleted")}  # type: ignore[attr-defined]
    assert (
        lines["processed_messages"].message
        == "retention: deleted 7 rows of processed_messages older than 604800 s"
    )
    # Batches of three: 3 + 3 + 1.
    assert (lines["processed_messages"].batches, lines["outbox"].batches) == (3, 2)  # type: ignore[attr-defined]

    # A second pass finds nothing more, and says so.
    assert await retention(engine, meters).run_once() == {"outbox": 0, "processed_messages": 0}


async def test_a_redelivery_inside_the_window_is_still_recognised_as_applied(
    engine: AsyncEngine, meters: MeterProvider
) -> None:
    payments = PaymentRepository(engine)
    message_id = "o-1:order.cancelled"
    assert await payments.mark_voided(message_id, "o-1")

    async def applied_ago(age: timedelta) -> None:
        async with engine.begin() as conn:
            await conn.execute(update(inbox).values(processed_at=NOW - age))

    # Six days later, inside the seven-day window: retention keeps the id, the copy is dropped.
    await applied_ago(6 * DAY)
    assert await retention(engine, meters).run_once() == {"outbox": 0, "processed_messages": 0}
    assert not await payments.mark_voided(message_id, "o-1")
    # Past the window the id is gone: a copy arriving then would be applied as new. No redelivery
    # comes that late (see lantern_runtime.storage.retention); a replay must come sooner.
    await applied_ago(8 * DAY)
    assert await retention(engine, meters).run_once() == {"outbox": 0, "processed_messages": 1}
    assert await payments.mark_voided(message_id, "o-1")


@pytest.mark.postgres
async def test_a_batch_skips_rows_another_transaction_holds_instead_of_waiting(
    postgres_url: str, meters: MeterProvider
) -> None:
    async with engine_with(postgres_url, metadata) as engine:
        await add_inbox(engine, [f"old-{n}" for n in range(4)], age=8 * DAY)
        async with engine.connect() as holder:
            await holder.execute(select(inbox).where(inbox.c.message_id == "old-0").with_for_update())
            # Held until the end of the block, as a long transaction on the hot path would.
            deleted = await asyncio.wait_for(retention(engine, meters).run_once(), timeout=5)
            await holder.rollback()
        assert deleted["processed_messages"] == 3
        assert (await ids_in(engine))[0] == {"old-0"}
        assert await retention(engine, meters).run_once() == {"outbox": 0, "processed_messages": 1}


async def test_the_worker_passes_every_interval_and_stops_at_once(
    engine: AsyncEngine, meters: MeterProvider
) -> None:
    await add_inbox(engine, ["old-0"], age=8 * DAY)
    worker = retention(engine, meters, interval_seconds=0.2)
    worker.start()
    for _ in range(100):
        if not (await ids_in(engine))[0]:
            break
        await asyncio.sleep(0.05)
    assert (await ids_in(engine))[0] == set()
    await asyncio.wait_for(worker.stop(), timeout=2)
