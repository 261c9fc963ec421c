from __future__ import annotations

import asyncio
import json
import subprocess
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lantern_runtime.storage import create_engine, upgrade
from lantern_runtime.storage.migrations import history_of
from lantern_runtime.telemetry.libraries import instrument_libraries

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.health import Readiness

pytestmark = pytest.mark.rabbitmq

_EXPORTER = InMemorySpanExporter()
# As setup_telemetry builds it: the SDK's provider, global, and the stock instrumentations of
# httpx, SQLAlchemy and redis on it. The global provider can be set once per process; tests read
# what they need from the exporter.
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)
# Cumulative, as exported: a test reads the points of its own destinations.
_METRICS = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[_METRICS], shutdown_on_exit=False))
instrument_libraries(_PROVIDER, metrics.get_meter_provider())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes it runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# The services' databases are made by their migrations, as in `make run` and Kubernetes.
SERVICE_HISTORIES = {
    id(history.metadata): history for history in map(history_of, ("orders", "payments", "notifier"))
}


async def migrate(database_url: str, service: str) -> None:
    """Migrate the test's database to the head of `service`'s history, as its init container does."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, history_of(service))
    finally:
        await engine.dispose()


@asynccontextmanager
async def engine_with(database_url: str, metadata: MetaData) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database with `metadata`'s tables, disposed afterwards: a
    service's tables by its migrations, any other (a test's own) by create_all."""
    engine = create_engine(database_url)
    history = SERVICE_HISTORIES.get(id(metadata))
    if history is not None:
        await upgrade(engine, history)
    else:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database with nothing created: for the tests of migrations
    themselves. Tests that want a service's tables override it with `engine_with`."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def failing_once_the_broker_is_up(readiness: Readiness) -> list[str]:
    """What readiness still names a second after the broker connected: a service that waits for
    its database names `database` there."""
    for _ in range(200):
        if "broker" not in await readiness.failing():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    return await readiness.failing()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    """The global meter provider's reader: every point since the process started."""
    return _METRICS


async def drain(
    amqp_url: str, queue: str, *, expect: int, timeout: float = 10.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take `expect` messages off a queue (acking them), waiting up to `timeout` seconds."""
    connection = await aio_pika.connect(amqp_url)
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(taken) < expect and loop.time() < deadline:
            message = await declared.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            taken.append(message)
    finally:
        await connection.close()
    return taken


async def queue_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await connection.close()


def queues_in(amqp_url: str) -> dict[str, dict[str, Any]]:
    vhost = amqp_url.rsplit("/", 1)[1]
    listed = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "type",
            "durable",
            "arguments",
            "--formatter",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    queues = json.loads(listed.stdout)
    for queue in queues:
        # rabbitmqctl lists arguments as [name, type, value] triples.
        queue["arguments"] = {name: value for name, _, value in queue["arguments"]}
    return {queue["name"]: queue for queue in queues}
