"""Producer and consumer spans for RabbitMQ that follow the configured propagators.

FastStream's own middleware injects only W3C context, adds an empty "create" span to every
publish, and parents a handler's publishes under the incoming message's context. This one
makes the publish span the parent of the consumer's process span, and the process span the
parent of everything the handler does, so the chain of cause and effect is the trace's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from faststream._internal.basic_types import AsyncFuncAny
    from faststream.message import StreamMessage
    from faststream.rabbit.response import RabbitPublishCommand

_tracer = trace.get_tracer("lantern_runtime.messaging")


def _publish_attributes(cmd: RabbitPublishCommand) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": cmd.exchange.name or "amq.default",
        "messaging.rabbitmq.destination.routing_key": cmd.destination,
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    if message_id := cmd.message_options.get("message_id"):
        attributes["messaging.message.id"] = message_id
    if cmd.correlation_id:
        attributes["messaging.message.conversation_id"] = cmd.correlation_id
    return attributes


def _process_attributes(msg: StreamMessage[Any]) -> dict[str, Any]:
    raw = msg.raw_message
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": raw.exchange or "amq.default",
        "messaging.rabbitmq.destination.routing_key": raw.routing_key or "",
        "messaging.operation": "process",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.body.size": len(msg.body),
    }
    if msg.message_id:
        attributes["messaging.message.id"] = msg.message_id
    if raw.redelivered:
        attributes["messaging.rabbitmq.redelivered"] = True
    return attributes


class TracingMiddleware(BaseMiddleware):
    async def publish_scope(  # type: ignore[override]  # a Rabbit broker only publishes Rabbit commands
        self, call_next: AsyncFuncAny, cmd: RabbitPublishCommand
    ) -> Any:
        with _tracer.start_as_current_span(
            f"publish {cmd.message_options.get('message_type') or cmd.destination}",
            kind=SpanKind.PRODUCER,
            attributes=_publish_attributes(cmd),
        ):
            propagate.inject(cmd.headers)
            return await call_next(cmd)

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        parent = propagate.extract(msg.headers)
        with _tracer.start_as_current_span(
            f"process {msg.raw_message.type or msg.raw_message.routing_key}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_process_attributes(msg),
        ):
            return await call_next(msg)
