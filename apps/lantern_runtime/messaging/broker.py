"""The one way a Lantern service builds its RabbitBroker and finds the shared topology."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from faststream import AckPolicy, BaseMiddleware
from faststream.message import encode_message
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.response import RabbitPublishCommand

from lantern_runtime.messaging.declare import check_topology
from lantern_runtime.messaging.publisher import MessageTooLarge
from lantern_runtime.messaging.tracing import MessagingTelemetry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from faststream import ContextRepo

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
        # Inside the tracing middleware, so a refused publish is an error on its producer span.
        middlewares=(
            MessagingTelemetry(settings.amqp_url),
            PublishPolicy(broker_user(settings.amqp_url), settings.broker_max_message_bytes),
        ),
        logger=logging.getLogger(f"{service_name}.broker"),
        # FastStream's per-message "Received"/"Processed" lines repeat the consumer spans.
        log_level=logging.DEBUG,
        reconnect_interval=2.0,
        timeout=10.0,
    )


async def connect_broker(broker: RabbitBroker, topology: Topology) -> None:
    """Connect and look the topology up (passively: the service's user may not declare it),
    without consuming yet. Raises TopologyNotDeclared naming what is missing, so a start-up
    retrying meanwhile says why it waits; both steps are idempotent."""
    connection = await broker.connect()
    await check_topology(connection, topology)


async def start_broker(broker: RabbitBroker, topology: Topology, settings: BrokerSettings) -> None:
    """Connect, look the topology up, then start consuming; raise naming the URL if unreachable."""
    try:
        connection = await broker.connect()
    except Exception as error:
        raise ConnectionError(
            f"cannot reach RabbitMQ at {redacted_url(settings.amqp_url)}: {error}. "
            "Start it (e.g. `rabbitmq-server -detached`) or set AMQP_URL."
        ) from error
    await check_topology(connection, topology)
    await broker.start()


def broker_user(amqp_url: str) -> str:
    """The user an AMQP URL connects as (RabbitMQ's default, guest, when it names none)."""
    return unquote(urlsplit(amqp_url).username or "guest")


class PublishPolicy:
    """Every publish of a broker: stamped with the connecting user as `user_id`, which RabbitMQ
    checks (a consumer can then tell who published), and refused before sending when its body
    is over the broker's max_message_size. A FastStream middleware factory."""

    def __init__(self, user: str, max_bytes: int) -> None:
        self.user = user
        self.max_bytes = max_bytes

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _PublishPolicyMiddleware:
        return _PublishPolicyMiddleware(msg, context=context, policy=self)


class _PublishPolicyMiddleware(BaseMiddleware[RabbitPublishCommand]):
    def __init__(self, msg: Any, /, *, context: ContextRepo, policy: PublishPolicy) -> None:
        super().__init__(msg, context=context)
        self.policy = policy

    async def publish_scope(
        self, call_next: Callable[[RabbitPublishCommand], Awaitable[Any]], cmd: RabbitPublishCommand
    ) -> Any:
        if not isinstance(cmd.body, bytes | bytearray):
            # Encoded once, here, to be measured: the bytes go on with their content type, so
            # the producer does not encode the body again.
            encoded, content_type = encode_message(cmd.body, None)
            cmd.body = encoded
            if not cmd.message_options.get("content_type"):
                cmd.message_options["content_type"] = content_type
        size = len(cmd.body)
        if size > self.policy.max_bytes:
            what = cmd.message_options.get("message_type") or cmd.destination
            raise MessageTooLarge(
                f"{what} {cmd.message_options.get('message_id') or ''} is {size} bytes, over the "
                f"broker's limit of {self.policy.max_bytes} bytes (BROKER_MAX_MESSAGE_BYTES, the "
                "chart's rabbitmq.maxMessageBytes); it was not sent",
                size=size,
                limit=self.policy.max_bytes,
            )
        cmd.message_options["user_id"] = self.policy.user
        return await call_next(cmd)


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
