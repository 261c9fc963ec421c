"""The outbox's backlog gauges, read by the SDK's own metric reader, over a real outbox table
and the real broker: they count what the relay saw, and the age grows while nobody drains."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from lantern_runtime.messaging import EventPublisher, build_broker
from lantern_runtime.settings import BrokerSettings
from lantern_runtime.storage import OutboxRelay
from orders.domain import PlaceOrder
from orders.repository import OrderRepository
from orders.tables import metadata, outbox
from tests.integration.conftest import engine_with

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.rabbitmq

ORDER = PlaceOrder.model_validate({"items": [{"sku": "lamp", "quantity": 1, "unit_price": "5.00"}]})


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database_url, metadata) as engine:
        yield engine


def gauges(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name.startswith("lantern.outbox.")
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    }


async def gauges_when(
    reader: InMemoryMetricReader, done: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """The gauges once `done` holds for them, or as they are after a wait."""
    deadline = time.monotonic() + 10
    while True:
        seen = gauges(reader)
        if done(seen) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


async def test_the_backlog_gauges_count_unsent_rows_and_age_until_the_relay_drains_them(
    engine: AsyncEngine, amqp_url: str
) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    broker = build_broker(BrokerSettings(amqp_url=amqp_url), "orders")
    await broker.connect()
    relay = OutboxRelay(engine, outbox, EventPublisher(broker), poll_seconds=0.1, meter_provider=meters)
    try:
        # Before the relay has counted, the gauges say nothing rather than a made-up zero.
        assert gauges(reader) == {}
        repository = OrderRepository(engine)
        for n in range(3):
            await repository.place("c-1", ORDER, f"key-{n}")
        await relay.count_backlog()
        first = gauges(reader)
        assert first["lantern.outbox.pending"] == 3
        # The relay is not running: no pass, no count, yet the oldest row's age keeps growing,
        # read from what the relay last saw (a callback that queried would block the export).
        await asyncio.sleep(1.1)
        later = gauges(reader)
        assert later["lantern.outbox.pending"] == 3
        assert later["lantern.outbox.oldest_age"] >= first["lantern.outbox.oldest_age"] + 1.0

        relay.start()
        drained = await gauges_when(reader, lambda seen: seen["lantern.outbox.pending"] == 0)
        assert drained == {"lantern.outbox.pending": 0, "lantern.outbox.oldest_age": 0.0}
    finally:
        await relay.stop()
        await broker.stop()
        meters.shutdown()


async def test_the_backlog_keeps_counting_while_the_broker_refuses_every_publish(engine: AsyncEngine) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    # Nothing listens here: each pass fails, as during a broker outage.
    broker = build_broker(BrokerSettings(amqp_url="amqp://guest:guest@127.0.0.1:9/"), "orders")
    relay = OutboxRelay(
        engine, outbox, EventPublisher(broker, timeout=0.2), poll_seconds=0.1, meter_provider=meters
    )
    await OrderRepository(engine).place("c-1", ORDER, "key-outage")
    relay.start()
    try:
        counted = await gauges_when(reader, lambda seen: "lantern.outbox.pending" in seen)
        assert counted["lantern.outbox.pending"] == 1
    finally:
        await relay.stop()
        meters.shutdown()
