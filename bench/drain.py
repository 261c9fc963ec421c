"""Benchmark 1, consumer drain: N persistent ~60-byte JSON messages in one durable quorum queue,
drained with prefetch 100 and acks after handling, by each variant in its own process."""

from __future__ import annotations

import asyncio

import aio_pika

from bench.infra import fresh_database, python_env, run_worker, workplace
from bench.report import Benchmark, Metric, Target
from bench.sink import count_spans
from lantern_runtime.messaging.topology import QueueSpec

DRAIN_QUEUE = "bench.drain"
FULL_PATH_MESSAGES = 4_000
DONE_QUEUE = QueueSpec("bench.done", ("bench.ticked",))
# A sampled W3C parent, as a traced producer would have sent it.
TRACEPARENT = "00-5c4f5847cd8d1518bf8d79d7ac795202-1a2b3c4d5e6f7081-01"


def queue_spec(name: str) -> QueueSpec:
    return QueueSpec(name, ("bench.tick",))


def work_queue_arguments(name: str) -> dict[str, object]:
    """The arguments of Lantern's work queue `name`, as its topology declares it."""
    queue = queue_spec(name).work_queue()
    return {**(queue.arguments or {}), "x-queue-type": "quorum"}


def body(i: int) -> bytes:
    return b'{"order_id":"o-%06d","sku":"lamp","quantity":2,"total":"39.80"}' % i


async def fill(amqp_url: str, queue: str, count: int) -> None:
    """Declare the queue as Lantern's topology does and put `count` confirmed messages in it."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        declared = await channel.declare_queue(queue, durable=True, arguments=work_queue_arguments(queue))
        await declared.purge()
        for start in range(0, count, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            body(i),
                            content_type="application/json",
                            type="bench.tick",
                            message_id=f"m-{i}",
                            correlation_id=f"c-{i}",
                            headers={"traceparent": TRACEPARENT},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for i in range(start, min(start + 1000, count))
                )
            )
    finally:
        await connection.close()


async def purge(amqp_url: str, *queues: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in queues:
            try:
                queue = await channel.get_queue(name, ensure=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                continue
            await queue.purge()
    finally:
        await connection.close()


def benchmark(rounds: int, count: int, full_count: int = FULL_PATH_MESSAGES) -> Benchmark:
    from bench.drain_worker import VARIANTS, full_path, traced

    full_count = min(count, full_count)
    cpu = "cpu_us_per_msg"
    result = Benchmark(
        name="consumer",
        title=(
            f"Consumer drain: {count:,} persistent JSON messages ({full_count:,} on the full path), "
            "prefetch 100"
        ),
        metrics=[
            Metric("msg_per_s", "throughput", "msg/s", True),
            Metric(cpu, "CPU", "us/msg", False),
        ],
        baseline="faststream",
        variants=list(VARIANTS),
        notes=[
            "every variant drains the same durable quorum queue (Lantern's work queue) of messages "
            "carrying a sampled traceparent; each runs in a fresh process, and each settles its heap "
            "alike (gc.collect, gc.freeze) before its clock starts",
            "CPU = the consumer process's user+system time (all threads, span export included) / messages",
            "traced (+otel, +lantern-otel, +traced) = the stock SDK: always-on sampling, BatchSpanProcessor, "
            "the stock OTLP/HTTP exporters (spans and metrics) to a trace sink process that stores each "
            "request as it comes (bench.sink); the spans are counted after each sample",
            "faststream+otel = FastStream's RabbitTelemetryMiddleware; faststream+lantern-otel = the same "
            "plain broker with Lantern's MessagingTelemetry instead; lantern = Lantern's broker and "
            "work-queue subscriber (delivery policy, publish policy, MessagingTelemetry)",
            "lantern-full = lantern + per message one PostgreSQL transaction recording its id in the inbox "
            "and its outcome event in the outbox, and the outbox relay publishing each outcome confirmed, "
            "persistent and mandatory; its clock stops when the relay has published the last one; "
            "+traced adds the SQLAlchemy instrumentation's spans",
            "aio-pika-full = the same work as lantern-full on raw aio-pika and asyncpg, untraced: the floor "
            "under lantern-full",
        ],
        targets=[
            Target(
                "traced Lantern CPU/msg vs FastStream + RabbitTelemetryMiddleware",
                cpu,
                "lantern+traced",
                "faststream+otel",
                1.0,
                at_most=True,
            ),
            Target(
                "full path CPU/msg, traced (database spans included) vs untraced",
                cpu,
                "lantern-full+traced",
                "lantern-full",
                1.15,
                at_most=True,
            ),
            Target("traced Lantern CPU/msg vs untraced FastStream", cpu, "lantern+traced", "faststream"),
            Target(
                "Lantern's middleware vs FastStream's, both on a plain broker",
                cpu,
                "faststream+lantern-otel",
                "faststream+otel",
            ),
            Target(
                "FastStream's tracing: faststream+otel vs faststream", cpu, "faststream+otel", "faststream"
            ),
            Target(
                "Lantern's tracing on a plain broker vs faststream",
                cpu,
                "faststream+lantern-otel",
                "faststream",
            ),
            Target("Lantern untraced vs faststream", cpu, "lantern", "faststream"),
            Target("Lantern's tracing: lantern+traced vs lantern", cpu, "lantern+traced", "lantern"),
            Target("full path on Lantern vs on raw aio-pika+asyncpg", cpu, "lantern-full", "aio-pika-full"),
        ],
    )
    with workplace() as (amqp_url, workdir, endpoint):
        env = python_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        exported = 0
        for round_number in range(rounds):
            # Alternate the order too, so a drift in the machine does not favour one variant.
            order = VARIANTS if round_number % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                # The full path is ten times slower; fewer messages keep the round short.
                n = full_count if full_path(variant) else count
                asyncio.run(fill(amqp_url, DRAIN_QUEUE, n))
                args = ["--amqp-url", amqp_url, "--queue", DRAIN_QUEUE, "--count", str(n)]
                if full_path(variant):
                    with fresh_database(workdir) as database_url:
                        if database_url.startswith("sqlite"):
                            note = "PostgreSQL was not reachable: lantern-full's inbox was in SQLite"
                            if note not in result.notes:
                                result.notes += [note, "aio-pika-full (asyncpg only) was left out"]
                            if variant == "aio-pika-full":
                                asyncio.run(purge(amqp_url, DRAIN_QUEUE))
                                continue
                        sample = run_worker(
                            "bench.drain_worker", [variant, *args, "--database-url", database_url], env
                        )
                else:
                    sample = run_worker("bench.drain_worker", [variant, *args], env)
                result.add(variant, sample)
                # A traced variant must have exported a span per message, or it measured too little.
                before, exported = exported, count_spans(workdir / "traces.otlp")
                if traced(variant) and exported - before < n:
                    got = exported - before
                    result.notes.append(f"{variant} round {round_number + 1}: {got} spans for {n} messages")
                print(
                    f"  consumer round {round_number + 1}/{rounds} {variant:24s} "
                    f"{sample['msg_per_s']:8.0f} msg/s {sample[cpu]:7.1f} us/msg",
                    flush=True,
                )
                asyncio.run(purge(amqp_url, DRAIN_QUEUE, DONE_QUEUE.name))
    return result
