"""One consumer variant in a process of its own: drain the pre-filled queue, print its numbers.

    python -m bench.drain_worker VARIANT --amqp-url URL --queue Q --count N [--database-url URL]

Timing starts when consuming starts (imports, connection and setup excluded) and ends when the
last message is acknowledged, or on the full path when the last outcome event is confirmed; CPU
time is the whole process's (every thread, so the span exporter's thread counts) up to the end
of the final span flush. Every variant settles its heap the same way before the clock starts
(`settle_heap`), so no ratio compares a frozen heap with one that is not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import Callable

# Ordered so that each variant differs from one before it in one thing.
VARIANTS = (
    "aio-pika",
    "faststream",
    # FastStream's own RabbitTelemetryMiddleware on the stock SDK: what a user would pick.
    "faststream+otel",
    # The same plain broker with Lantern's middleware (MessagingTelemetry) instead.
    "faststream+lantern-otel",
    "lantern",
    "lantern+traced",
    "aio-pika-full",
    "lantern-full",
    "lantern-full+traced",
)
EVENT_TYPE = "bench.tick"
# Written to stderr as the clock starts, for a profiler to attach then (bench.cpu_profile).
DRAINING = "draining"
DONE_EVENT_TYPE = "bench.ticked"


def traced(variant: str) -> bool:
    return variant.endswith(("traced", "otel"))


def full_path(variant: str) -> bool:
    return "-full" in variant


class Tick(BaseModel):
    order_id: str
    sku: str
    quantity: int
    total: str


class Ticked(BaseModel):
    order_id: str


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settle_heap() -> None:
    """What a Lantern service does once it is ready (lantern_runtime.heap), done by every variant
    alike: collect start-up's garbage, then keep what is left out of every later collection."""
    gc.collect()
    gc.freeze()


class Meter:
    """Counts handled messages; `done` is set at the last one."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.done = asyncio.Event()
        self.started_wall = 0.0
        self.started_cpu = 0.0
        self.finished_wall = 0.0

    def start(self) -> None:
        settle_heap()
        print(DRAINING, file=sys.stderr, flush=True)
        self.started_wall = time.perf_counter()
        self.started_cpu = _cpu_seconds()

    def tick(self) -> None:
        self.seen += 1
        if self.seen == self.count:
            self.finish()
            self.done.set()

    def finish(self) -> None:
        """The work is done; the full path calls it again once its last outcome is published."""
        self.finished_wall = time.perf_counter()

    def result(self, flush: Callable[[], Any] | None = None) -> dict[str, float]:
        if flush is not None:
            flush()
        cpu = _cpu_seconds() - self.started_cpu
        wall = self.finished_wall - self.started_wall
        return {
            "messages": self.count,
            "wall_s": wall,
            "cpu_s": cpu,
            "msg_per_s": self.count / wall,
            "cpu_us_per_msg": cpu / self.count * 1e6,
        }


def _queue_arguments(queue_name: str) -> dict[str, Any]:
    # Every variant drains the same kind of queue: Lantern's quorum work queue.
    from bench.drain import work_queue_arguments

    return work_queue_arguments(queue_name)


async def raw_aio_pika(url: str, queue_name: str, meter: Meter) -> dict[str, float]:
    import aio_pika

    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.declare_queue(queue_name, durable=True, arguments=_queue_arguments(queue_name))
    meter.start()
    async with queue.iterator() as messages:
        async for message in messages:
            Tick.model_validate_json(message.body)
            await message.ack()
            meter.tick()
            if meter.done.is_set():
                break
    result = meter.result()
    await connection.close()
    return result


def stock_sdk(service: str) -> tuple[Any, Any]:
    """The SDK's tracer and meter providers as its documentation sets them up, made global: a
    BatchSpanProcessor and a periodic metric reader, each with the stock OTLP/HTTP exporter (the
    ones Lantern's setup_telemetry builds), reading the same OTEL_* variables."""
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


def _faststream_queue(queue_name: str) -> Any:
    from faststream.rabbit import QueueType, RabbitQueue

    args = _queue_arguments(queue_name)
    args.pop("x-queue-type", None)
    return RabbitQueue(queue_name, queue_type=QueueType.QUORUM, durable=True, arguments=args)


async def faststream_plain(
    url: str, queue_name: str, meter: Meter, *, tracing: str | None
) -> dict[str, float]:
    """A plain FastStream broker and a typed handler; `tracing` names the middleware, if any:
    FastStream's own (`otel`) or Lantern's (`lantern-otel`), each on the stock SDK."""
    from faststream.rabbit import Channel, RabbitBroker

    middlewares: tuple[Any, ...] = ()
    flush = None
    if tracing is not None:
        tracer_provider, meter_provider = stock_sdk("bench-faststream")
        flush = tracer_provider.force_flush
        if tracing == "otel":
            from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware

            middlewares = (
                RabbitTelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider),
            )
        else:
            from lantern_runtime.messaging.tracing import MessagingTelemetry

            middlewares = (MessagingTelemetry(url),)

    # The same FastStream log level as Lantern's broker, so neither pays for per-message log lines.
    broker = RabbitBroker(
        url,
        default_channel=Channel(prefetch_count=100),
        middlewares=middlewares,
        log_level=logging.DEBUG,
    )

    @broker.subscriber(_faststream_queue(queue_name))
    async def handle(body: Tick) -> None:
        meter.tick()

    await broker.connect()
    meter.start()
    await broker.start()
    await meter.done.wait()
    result = meter.result(flush)
    await broker.stop()
    return result


# The full path's tables on raw asyncpg: Lantern's inbox and outbox as their SQLAlchemy tables
# declare them (lantern_runtime.storage).
RAW_SCHEMA = """
CREATE TABLE processed_messages (message_id varchar(200) PRIMARY KEY, processed_at timestamptz NOT NULL);
CREATE INDEX ON processed_messages (processed_at);
CREATE TABLE outbox (
    id serial PRIMARY KEY, message_id varchar(200) NOT NULL UNIQUE, event_type varchar(100) NOT NULL,
    correlation_id varchar(200), body text NOT NULL, trace_headers json NOT NULL,
    created_at timestamptz NOT NULL, sent_at timestamptz, claimed_until timestamptz
);
CREATE INDEX ON outbox (sent_at);
"""
RAW_RECORD = "INSERT INTO processed_messages VALUES ($1, now()) ON CONFLICT DO NOTHING"
RAW_ENQUEUE = (
    "INSERT INTO outbox (message_id, event_type, correlation_id, body, trace_headers, created_at) "
    "VALUES ($1, $2, $3, $4, '{}', now())"
)
RAW_CLAIM = (
    "UPDATE outbox SET claimed_until = now() + interval '30 seconds' WHERE id IN ("
    "SELECT id FROM outbox WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < now()) "
    "ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING *"
)
RAW_SENT = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1)"
RAW_BACKLOG = "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL"
BATCH = 100


async def raw_aio_pika_full(url: str, queue_name: str, meter: Meter, database_url: str) -> dict[str, float]:
    """The full path's work with no framework and no tracing, the floor under lantern-full: per
    message one transaction recording its id in the inbox and its outcome event in the outbox,
    and a relay publishing the outbox's rows with confirms, marking them sent, counting the rest."""
    from urllib.parse import unquote, urlsplit

    import aio_pika
    import asyncpg

    from bench.drain import DONE_QUEUE
    from lantern_runtime.messaging.topology import EVENTS_EXCHANGE

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    # The consumer and the relay each on a connection of their own, as from Lantern's pool.
    database, relay_database = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    await database.execute(RAW_SCHEMA)
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.declare_queue(queue_name, durable=True, arguments=_queue_arguments(queue_name))
    outcomes = await connection.channel(publisher_confirms=True)
    exchange = await outcomes.declare_exchange(
        EVENTS_EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True
    )
    done = await outcomes.declare_queue(
        DONE_QUEUE.name, durable=True, arguments=_queue_arguments(DONE_QUEUE.name)
    )
    await done.bind(exchange, DONE_EVENT_TYPE)
    user = unquote(urlsplit(url).username or "guest")
    wake = asyncio.Event()
    stopping = False

    async def relay() -> None:
        while True:
            last = stopping
            if not last:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                wake.clear()
            while True:
                async with relay_database.transaction():
                    rows = sorted(await relay_database.fetch(RAW_CLAIM), key=lambda row: row["id"])
                for row in rows:
                    await exchange.publish(
                        aio_pika.Message(
                            row["body"].encode(),
                            content_type="application/json",
                            type=row["event_type"],
                            message_id=row["message_id"],
                            correlation_id=row["correlation_id"],
                            user_id=user,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=row["event_type"],
                        mandatory=True,
                    )
                if rows:
                    async with relay_database.transaction():
                        await relay_database.execute(RAW_SENT, [row["id"] for row in rows])
                if len(rows) < BATCH:
                    break
            await relay_database.fetchrow(RAW_BACKLOG)
            if last:
                return

    relaying = asyncio.create_task(relay())
    meter.start()
    async with queue.iterator() as messages:
        async for message in messages:
            tick = Tick.model_validate_json(message.body)
            async with database.transaction():
                first = await database.execute(RAW_RECORD, message.message_id) == "INSERT 0 1"
                if first:
                    await database.execute(
                        RAW_ENQUEUE,
                        f"{message.message_id}:done",
                        DONE_EVENT_TYPE,
                        message.correlation_id,
                        Ticked(order_id=tick.order_id).model_dump_json(),
                    )
            if first:
                wake.set()
            await message.ack()
            meter.tick()
            if meter.done.is_set():
                break
    stopping = True
    wake.set()
    await relaying
    meter.finish()
    result = meter.result()
    await connection.close()
    await database.close()
    await relay_database.close()
    return result


async def lantern(
    url: str, queue_name: str, meter: Meter, *, full: bool, database_url: str | None
) -> dict[str, float]:
    """Lantern's broker and a work-queue subscriber, as a service has them; the full path adds
    what a service's consumer does with its database: the inbox and the outbox in one
    transaction per message, and the outbox relay publishing with confirms."""
    from sqlalchemy import MetaData

    from bench.drain import DONE_QUEUE, queue_spec
    from lantern_runtime.messaging import (
        CurrentDelivery,
        EventPublisher,
        Topology,
        build_broker,
        declare_topology,
        event_publisher,
        event_type,
        work_queue_subscriber,
    )
    from lantern_runtime.messaging.publisher import Event
    from lantern_runtime.settings import BrokerSettings
    from lantern_runtime.storage import (
        OutboxRelay,
        add_to_outbox,
        create_engine,
        first_delivery,
        inbox_table,
        outbox_table,
    )
    from lantern_runtime.telemetry import setup_telemetry

    # Before the engine is made, so that its SQL is traced (lantern_runtime.telemetry.libraries).
    telemetry = setup_telemetry("bench-consumer", log_level="INFO")
    settings = BrokerSettings(amqp_url=url, prefetch_count=100)
    broker = build_broker(settings, "bench-consumer")
    spec = queue_spec(queue_name)

    class TickHappened(Event):
        event_type = EVENT_TYPE
        order_id: str
        sku: str
        quantity: int
        total: str

    class TickDone(Event):
        event_type = DONE_EVENT_TYPE
        order_id: str

    ticks = work_queue_subscriber(broker, spec, settings)
    engine = None
    relay = None
    if full:
        assert database_url is not None
        engine = create_engine(database_url)
        metadata = MetaData()
        inbox, outbox = inbox_table(metadata), outbox_table(metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        publisher = EventPublisher(
            broker, timeout=settings.publish_timeout, publishers=[event_publisher(broker, TickDone)]
        )
        relay = OutboxRelay(
            engine, outbox, publisher, poll_seconds=1.0, meter_provider=telemetry.meter_provider
        )
        wake = relay.wake

        async def on_tick_full(event: TickHappened, delivery: CurrentDelivery) -> None:
            async with engine.begin() as conn:
                first = await first_delivery(conn, inbox, delivery.message_id)
                if first:
                    await add_to_outbox(
                        conn,
                        outbox,
                        TickDone(order_id=event.order_id),
                        message_id=f"{delivery.message_id}:done",
                        correlation_id=delivery.correlation_id or event.order_id,
                    )
            if first:
                wake()
            meter.tick()

        # The models are local to this function (so the other variants never import Lantern),
        # where FastStream cannot resolve postponed annotations: it is given the objects.
        on_tick_full.__annotations__ = {"event": TickHappened, "delivery": CurrentDelivery, "return": None}
        ticks(filter=event_type(TickHappened))(on_tick_full)
    else:

        async def on_tick(event: TickHappened) -> None:
            meter.tick()

        on_tick.__annotations__ = {"event": TickHappened, "return": None}
        ticks(filter=event_type(TickHappened))(on_tick)

    topology = Topology((spec, DONE_QUEUE))
    await declare_topology(url, topology)
    await broker.connect()
    if relay is not None:
        relay.start()
    # Like connecting and declaring, settling the heap (what a service's lifespan does once it
    # is ready) is start-up, not the drain: FastStream's variants start the clock there too.
    meter.start()
    await broker.start()
    await meter.done.wait()
    if relay is not None:
        await relay.stop()
        meter.finish()
    result = meter.result(telemetry.tracer_provider.force_flush if telemetry.tracer_provider else None)
    await broker.stop()
    telemetry.shutdown()
    if engine is not None:
        await engine.dispose()
    return result


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    meter = Meter(args.count)
    if args.variant == "aio-pika":
        return await raw_aio_pika(args.amqp_url, args.queue, meter)
    if args.variant == "aio-pika-full":
        return await raw_aio_pika_full(args.amqp_url, args.queue, meter, args.database_url)
    if args.variant.startswith("faststream"):
        tracing = args.variant.partition("+")[2] or None
        return await faststream_plain(args.amqp_url, args.queue, meter, tracing=tracing)
    return await lantern(
        args.amqp_url,
        args.queue,
        meter,
        full=full_path(args.variant),
        database_url=args.database_url,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_worker")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    if traced(args.variant):
        os.environ.setdefault("OTEL_TRACES_SAMPLER", "always_on")
    else:
        os.environ["OTEL_SDK_DISABLED"] = "true"
    result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
