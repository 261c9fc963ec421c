"""One consumer variant in a process of its own: drain the pre-filled queue, print its numbers.

    python -m bench.drain_worker VARIANT --amqp-url URL --queue Q --count N [--database URL]

Timing starts when consuming starts (imports, connection and setup excluded) and ends when the
last message is acknowledged; CPU time is the whole process's (every thread, so the span
exporter's thread counts) up to the end of the final span flush.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import Callable

VARIANTS = (
    "aio-pika",
    "aio-pika-full",
    "faststream",
    "faststream+otel",
    "lantern",
    "lantern+traced",
    "lantern-full+traced",
)
EVENT_TYPE = "bench.tick"
DONE_EVENT_TYPE = "bench.ticked"


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
        self.started_wall = time.perf_counter()
        self.started_cpu = _cpu_seconds()

    def tick(self) -> None:
        self.seen += 1
        if self.seen == self.count:
            self.finished_wall = time.perf_counter()
            self.done.set()

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


async def raw_aio_pika_full(url: str, queue_name: str, meter: Meter, database_url: str) -> dict[str, float]:
    """The full path's work with no framework and no tracing: the floor under lantern-full."""
    import aio_pika
    import asyncpg

    from bench.drain import DONE_QUEUE
    from lantern_runtime.messaging.topology import EVENTS_EXCHANGE

    database = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await database.execute(
        "CREATE TABLE processed_messages (message_id varchar(200) PRIMARY KEY, "
        "processed_at timestamptz NOT NULL)"
    )
    record = "INSERT INTO processed_messages VALUES ($1, now()) ON CONFLICT DO NOTHING"
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
    meter.start()
    async with queue.iterator() as messages:
        async for message in messages:
            tick = Tick.model_validate_json(message.body)
            async with database.transaction():
                first = await database.execute(record, message.message_id) == "INSERT 0 1"
            if first:
                await exchange.publish(
                    aio_pika.Message(
                        Ticked(order_id=tick.order_id).model_dump_json().encode(),
                        content_type="application/json",
                        type=DONE_EVENT_TYPE,
                        message_id=f"{message.message_id}:done",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=DONE_EVENT_TYPE,
                    mandatory=True,
                )
            await message.ack()
            meter.tick()
            if meter.done.is_set():
                break
    result = meter.result()
    await connection.close()
    await database.close()
    return result


def _faststream_queue(queue_name: str) -> Any:
    from faststream.rabbit import QueueType, RabbitQueue

    args = _queue_arguments(queue_name)
    args.pop("x-queue-type", None)
    return RabbitQueue(queue_name, queue_type=QueueType.QUORUM, durable=True, arguments=args)


async def faststream_plain(url: str, queue_name: str, meter: Meter, *, traced: bool) -> dict[str, float]:
    from faststream.rabbit import Channel, RabbitBroker

    middlewares: tuple[Any, ...] = ()
    flush = None
    if traced:
        from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "bench-faststream"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        middlewares = (RabbitTelemetryMiddleware(tracer_provider=provider),)
        flush = provider.force_flush

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


async def lantern(
    url: str, queue_name: str, meter: Meter, *, full: bool, database_url: str | None
) -> dict[str, float]:
    from sqlalchemy import MetaData

    from bench.drain import DONE_QUEUE, queue_spec
    from lantern_runtime.heap import freeze_startup_objects
    from lantern_runtime.messaging import (
        CurrentDelivery,
        EventPublisher,
        Topology,
        build_broker,
        declare_topology,
        event_type,
        work_queue_subscriber,
    )
    from lantern_runtime.messaging.publisher import Event
    from lantern_runtime.settings import BrokerSettings
    from lantern_runtime.storage import create_engine, first_delivery, inbox_table
    from lantern_runtime.telemetry import setup_telemetry

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
    if full:
        assert database_url is not None
        engine = create_engine(database_url)
        metadata = MetaData()
        inbox = inbox_table(metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        publisher = EventPublisher(broker, timeout=settings.publish_timeout)

        async def on_tick_full(event: TickHappened, delivery: CurrentDelivery) -> None:
            async with engine.begin() as conn:
                first = await first_delivery(conn, inbox, delivery.message_id)
            if first:
                await publisher.publish(
                    TickDone(order_id=event.order_id), message_id=f"{delivery.message_id}:done"
                )
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
    # What a service's lifespan does once it is ready (lantern_runtime.app). Like connecting
    # and declaring, it is start-up, not the drain: FastStream's variants start the clock there too.
    freeze_startup_objects()
    meter.start()
    await broker.start()
    await meter.done.wait()
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
    if args.variant in ("faststream", "faststream+otel"):
        return await faststream_plain(args.amqp_url, args.queue, meter, traced=args.variant.endswith("otel"))
    return await lantern(
        args.amqp_url,
        args.queue,
        meter,
        full=args.variant.startswith("lantern-full"),
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
    if args.variant.endswith("traced") or args.variant.endswith("otel"):
        os.environ.setdefault("OTEL_TRACES_SAMPLER", "always_on")
    else:
        os.environ["OTEL_SDK_DISABLED"] = "true"
    result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
