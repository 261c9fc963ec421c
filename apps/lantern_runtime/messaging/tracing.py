"""Producer and consumer spans and metrics for RabbitMQ, on the messaging semantic conventions of
the version Lantern pins (telemetry/conventions.py), made with the SDK's tracer and meter.

FastStream's own RabbitTelemetryMiddleware injects only W3C context, uses the deprecated
`messaging.operation`, adds an empty "create" span to every publish, and parents a handler's
publishes under the incoming message's context. This one follows the configured propagators,
makes the publish span the parent of the consumer's process span and the process span the
parent of everything the handler does, so the chain of cause and effect is the trace's shape.
"""

from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from faststream import BaseMiddleware
from opentelemetry import context, metrics, propagate, trace
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_CONVERSATION_ID,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
    MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
    MESSAGING_SYSTEM,
    MessagingOperationTypeValues,
)
from opentelemetry.semconv._incubating.metrics.messaging_metrics import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_PROCESS_DURATION,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind, Status, StatusCode

from lantern_runtime.telemetry.conventions import SCHEMA_URL, lantern_version

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from faststream import ContextRepo
    from faststream.message import StreamMessage
    from faststream.rabbit.response import RabbitPublishCommand

SCOPE = "lantern_runtime.messaging"
SEND = MessagingOperationTypeValues.SEND.value
PROCESS = MessagingOperationTypeValues.PROCESS.value
# The conventions' boundaries for messaging durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Lantern's own span attributes: what no convention names.
EVENT_TYPE = "lantern.event.type"
REDELIVERED = "lantern.message.redelivered"
PUBLISHER = "lantern.publisher"
# The metric attributes of the message being processed, for mark_failed.
_outcome: ContextVar[dict[str, Any] | None] = ContextVar("lantern_messaging_outcome", default=None)


def publish_destination(exchange: str, routing_key: str) -> str:
    """The conventions' RabbitMQ destination of a publish: `{exchange}:{routing key}`, one of
    them when the other is empty, `amq.default` when both are."""
    return ":".join(part for part in (exchange, routing_key) if part) or "amq.default"


def process_destination(exchange: str, routing_key: str, queue: str) -> str:
    """A consumer's destination: `{exchange}:{routing key}:{queue}`, empty parts left out and the
    queue left out when it is the routing key."""
    parts = [exchange, routing_key] + ([queue] if queue != routing_key else [])
    return ":".join(part for part in parts if part) or "amq.default"


class MessagingTelemetry:
    """A broker's spans and metrics: a FastStream middleware factory, one per broker, knowing
    the broker's address. Without an SDK provider, spans are non-recording and only the context
    travels on."""

    def __init__(self, amqp_url: str) -> None:
        url = urlsplit(amqp_url)
        self.server = {
            SERVER_ADDRESS: url.hostname or "localhost",
            SERVER_PORT: url.port or (5671 if url.scheme == "amqps" else 5672),
        }
        version = lantern_version()
        self.tracer = trace.get_tracer(SCOPE, version, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, version, schema_url=SCHEMA_URL)
        self.process_duration = meter.create_histogram(
            MESSAGING_PROCESS_DURATION,
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            MESSAGING_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of messaging operation initiated by a producer or consumer client.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.consumed = meter.create_counter(
            MESSAGING_CLIENT_CONSUMED_MESSAGES,
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.sent = meter.create_counter(
            MESSAGING_CLIENT_SENT_MESSAGES,
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )

    def measured(self, operation: str, destination: str) -> dict[str, Any]:
        """The attributes an operation's metrics and span share."""
        return {
            MESSAGING_SYSTEM: "rabbitmq",
            MESSAGING_OPERATION_NAME: operation,
            MESSAGING_DESTINATION_NAME: destination,
            **self.server,
        }

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _Middleware:
        return _Middleware(msg, context=context, telemetry=self)


class _Middleware(BaseMiddleware[Any]):
    def __init__(self, msg: Any, /, *, context: ContextRepo, telemetry: MessagingTelemetry) -> None:
        super().__init__(msg, context=context)
        self.telemetry = telemetry

    async def publish_scope(
        self, call_next: Callable[[RabbitPublishCommand], Awaitable[Any]], cmd: RabbitPublishCommand
    ) -> Any:
        t = self.telemetry
        destination = publish_destination(cmd.exchange.name, cmd.destination)
        measured = t.measured("publish", destination)
        attributes: dict[str, Any] = {**measured, MESSAGING_OPERATION_TYPE: SEND}
        if cmd.destination:
            attributes[MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY] = cmd.destination
        if message_id := cmd.message_options.get("message_id"):
            attributes[MESSAGING_MESSAGE_ID] = message_id
        if cmd.correlation_id:
            attributes[MESSAGING_MESSAGE_CONVERSATION_ID] = cmd.correlation_id
        if event_type := cmd.message_options.get("message_type"):
            attributes[EVENT_TYPE] = event_type
        started = perf_counter()
        with t.tracer.start_as_current_span(
            f"publish {destination}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            propagate.inject(cmd.headers)
            try:
                return await call_next(cmd)
            except Exception as error:
                measured[ERROR_TYPE] = type(error).__qualname__
                span.set_attribute(ERROR_TYPE, measured[ERROR_TYPE])
                raise
            finally:
                t.sent.add(1, measured)
                t.operation_duration.record(
                    perf_counter() - started, {**measured, MESSAGING_OPERATION_TYPE: SEND}
                )

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        t = self.telemetry
        raw = msg.raw_message
        # The subscriber handling the message, which FastStream keeps in its context.
        subscriber = self.context.get_local("handler_")
        queue = getattr(getattr(subscriber, "queue", None), "name", "") or ""
        destination = process_destination(raw.exchange or "", raw.routing_key or "", queue)
        measured = t.measured("process", destination)
        attributes: dict[str, Any] = {**measured, MESSAGING_OPERATION_TYPE: PROCESS}
        if raw.routing_key:
            attributes[MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY] = raw.routing_key
        if raw.delivery_tag is not None:
            attributes[MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG] = raw.delivery_tag
        if msg.message_id:
            attributes[MESSAGING_MESSAGE_ID] = msg.message_id
        if msg.correlation_id:
            attributes[MESSAGING_MESSAGE_CONVERSATION_ID] = msg.correlation_id
        if raw.type:
            attributes[EVENT_TYPE] = raw.type
        if raw.redelivered:
            attributes[REDELIVERED] = True
        if raw.user_id:
            # The publisher's broker user, which RabbitMQ checked against its login.
            attributes[PUBLISHER] = raw.user_id
        t.consumed.add(1, measured)
        started = perf_counter()
        # Attached first, so the message's baggage reaches the handler too.
        token = context.attach(propagate.extract(msg.headers))
        outcome = _outcome.set(measured)
        try:
            with t.tracer.start_as_current_span(
                f"process {destination}", kind=SpanKind.CONSUMER, attributes=attributes
            ) as span:
                try:
                    return await call_next(msg)
                except Exception as error:
                    measured[ERROR_TYPE] = type(error).__qualname__
                    span.set_attribute(ERROR_TYPE, measured[ERROR_TYPE])
                    raise
                finally:
                    # While the span is current, so the histogram's exemplar names it.
                    t.process_duration.record(perf_counter() - started, measured)
        finally:
            _outcome.reset(outcome)
            context.detach(token)


def mark_failed(error: BaseException) -> None:
    """A message's processing failed, and the delivery policy handles it (a retry or a dead
    letter) instead of raising: the process span and its metrics record it all the same."""
    error_type = type(error).__qualname__
    span = trace.get_current_span()
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"))
    span.set_attribute(ERROR_TYPE, error_type)
    measured = _outcome.get()
    if measured is not None:
        measured[ERROR_TYPE] = error_type
