"""Producer and consumer spans for RabbitMQ that follow the configured propagators.

FastStream's own middleware injects only W3C context, adds an empty "create" span to every
publish, and parents a handler's publishes under the incoming message's context. This one
makes the publish span the parent of the consumer's process span, and the process span the
parent of everything the handler does, so the chain of cause and effect is the trace's shape.

It runs for every message, so it does the least it can: without an SDK tracer provider it only
passes the context on; with one, it starts a span with the tracer setup_telemetry resolved once
(a lean span, telemetry/spans.py), with the attributes the trace contract needs and no
duplicates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from lantern_runtime.telemetry.propagation import extract
from lantern_runtime.telemetry.tracer import GlobalTracer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from faststream.message import StreamMessage
    from faststream.rabbit.response import RabbitPublishCommand

    # What BaseMiddleware's scopes are handed as `call_next`.
    AsyncFuncAny = Callable[[Any], Awaitable[Any]]

_tracer = GlobalTracer("lantern_runtime.messaging").get


def _publish_attributes(cmd: RabbitPublishCommand) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation": "publish",
        "messaging.destination.name": cmd.exchange.name or "amq.default",
        "messaging.rabbitmq.destination.routing_key": cmd.destination,
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
        "messaging.operation": "process",
        "messaging.destination.name": raw.exchange or "amq.default",
        "messaging.rabbitmq.destination.routing_key": raw.routing_key or "",
    }
    if msg.message_id:
        attributes["messaging.message.id"] = msg.message_id
    if raw.redelivered:
        attributes["messaging.rabbitmq.redelivered"] = True
    if raw.user_id:
        # The publisher's broker user, which RabbitMQ checked against its login.
        attributes["lantern.publisher"] = raw.user_id
    return attributes


async def _in_span(
    span: trace.Span,
    call_next: AsyncFuncAny,
    arg: Any,
    headers: dict[str, Any] | None,
    parent: context.Context | None = None,
) -> Any:
    """Run call_next with `span` current in `parent` (by default the current context); record an
    escaping error on it, as use_span would."""
    token = context.attach(trace.set_span_in_context(span, parent))
    try:
        if headers is not None:
            propagate.inject(headers)
        return await call_next(arg)
    except Exception as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        raise
    finally:
        context.detach(token)
        span.end()


class TracingMiddleware(BaseMiddleware):
    async def publish_scope(  # type: ignore[override]  # a Rabbit broker only publishes Rabbit commands
        self, call_next: AsyncFuncAny, cmd: RabbitPublishCommand
    ) -> Any:
        tracer = _tracer()
        if tracer is None:
            # No spans, but the context in force (e.g. an incoming message's) still travels on.
            propagate.inject(cmd.headers)
            return await call_next(cmd)
        span = tracer.start_span(
            f"publish {cmd.message_options.get('message_type') or cmd.destination}",
            kind=SpanKind.PRODUCER,
            attributes=_publish_attributes(cmd),
        )
        return await _in_span(span, call_next, cmd, cmd.headers)

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        parent = extract(msg.headers)
        tracer = _tracer()
        if tracer is None:
            token = context.attach(parent)
            try:
                return await call_next(msg)
            finally:
                context.detach(token)
        raw = msg.raw_message
        span = tracer.start_span(
            f"process {raw.type or raw.routing_key}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_process_attributes(msg),
        )
        # In the extracted context, so the message's baggage reaches the handler too.
        return await _in_span(span, call_next, msg, None, parent)
