"""The one way a Lantern service builds its RabbitBroker and declares the shared topology."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker

from lantern_runtime.messaging.topology import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE
from lantern_runtime.messaging.tracing import TracingMiddleware

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lantern_runtime.messaging.topology import Topology
    from lantern_runtime.settings import BrokerSettings


def build_broker(settings: BrokerSettings, service_name: str) -> RabbitBroker:
    """A broker with publisher confirms, explicit acks after processing and tracing.

    Unroutable publishes raise instead of vanishing, and shutdown waits for in-flight
    messages up to the service's drain time. FastStream validates each handler's typed
    parameters, for Lantern's work-queue subscribers (`work_queue_subscriber`) as for any other.
    """
    return RabbitBroker(
        settings.amqp_url,
        app_id=service_name,
        default_channel=Channel(
            prefetch_count=settings.prefetch_count,
            publisher_confirms=True,
            on_return_raises=True,
        ),
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        graceful_timeout=settings.shutdown_timeout,
        middlewares=(TracingMiddleware,),
        logger=logging.getLogger(f"{service_name}.broker"),
        # FastStream's per-message "Received"/"Processed" lines repeat the consumer spans.
        log_level=logging.DEBUG,
        reconnect_interval=2.0,
        timeout=10.0,
    )


async def declare_topology(broker: RabbitBroker, topology: Topology) -> None:
    """Declare every exchange, queue and binding of the flow; idempotent, so every service may."""
    events = await broker.declare_exchange(EVENTS_EXCHANGE)
    dead_letters = await broker.declare_exchange(DEAD_LETTER_EXCHANGE)
    for spec in topology.queues:
        work = await broker.declare_queue(spec.work_queue())
        for routing_key in spec.routing_keys:
            await work.bind(events, routing_key=routing_key)
        await broker.declare_queue(spec.retry_queue())
        dead = await broker.declare_queue(spec.dead_queue())
        await dead.bind(dead_letters, routing_key=spec.name)


async def connect_broker(broker: RabbitBroker, topology: Topology) -> None:
    """Connect and declare the topology, without consuming yet. Both steps are idempotent, so a
    start-up retrying after a failure may call it again."""
    await broker.connect()
    await declare_topology(broker, topology)


async def start_broker(broker: RabbitBroker, topology: Topology, settings: BrokerSettings) -> None:
    """Connect, declare the topology, then start consuming; raise naming the URL if unreachable."""
    try:
        await broker.connect()
    except Exception as error:
        raise ConnectionError(
            f"cannot reach RabbitMQ at {redacted_url(settings.amqp_url)}: {error}. "
            "Start it (e.g. `rabbitmq-server -detached`) or set AMQP_URL."
        ) from error
    await declare_topology(broker, topology)
    await broker.start()


def redacted_url(url: str) -> str:
    """The URL with its password as ***, fit for logs."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return parsed._replace(netloc=netloc).geturl()


async def stop_consuming(broker: RabbitBroker) -> None:
    """Stop taking deliveries and wait for those in flight, but keep the connection to publish."""
    for subscriber in broker.subscribers:
        await subscriber.stop()


def broker_ready(broker: RabbitBroker) -> Callable[[], Awaitable[bool]]:
    """A readiness check: true while the broker connection is up."""

    async def check() -> bool:
        return await broker.ping(timeout=1.0)

    return check
