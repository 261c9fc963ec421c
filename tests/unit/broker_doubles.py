"""What the handler tests share: settings, delivering an event through FastStream's in-memory
TestRabbitBroker, the retry and dead-letter publishers, and a relay that publishes what a fake
repository put in its outbox through the service's declared publishers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate

from lantern_runtime.messaging import EVENTS_EXCHANGE, EventPublisher
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER
from lantern_runtime.messaging.topology import REDELIVERIES_EXCHANGE
from lantern_runtime.settings import BrokerSettings

if TYPE_CHECKING:
    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.publisher import RabbitPublisher

    from lantern_runtime.messaging import Event, QueueSpec

# Three attempts: the first is ordinary, the third the last.
SETTINGS = BrokerSettings(
    max_delivery_attempts=3, retry_base_delay_ms=10, retry_max_delay_ms=40, handler_timeout=0.2
)
LAST = SETTINGS.max_delivery_attempts


async def deliver(
    broker: RabbitBroker,
    event: Event | bytes,
    *,
    message_id: str,
    event_type: str | None = None,
    attempt: Any = None,
    traceparent: str | None = None,
    content_type: str | None = "application/json",
) -> None:
    """Publish to the events exchange as a service's relay does: routed and typed by event type."""
    kind = event_type or getattr(event, "event_type", "")
    headers: dict[str, Any] = {}
    if attempt is not None:
        headers[ATTEMPT_HEADER] = attempt
    # Published from inside the sender's trace, as a relay does: the broker's tracing middleware
    # then carries that trace (under a producer span of its own whenever tracing is on).
    sender = propagate.extract({"traceparent": traceparent} if traceparent is not None else {})
    token = context.attach(sender)
    try:
        await broker.publish(
            event.model_dump_json().encode() if not isinstance(event, bytes) else event,
            exchange=EVENTS_EXCHANGE,
            routing_key=kind,
            message_type=kind,
            message_id=message_id,
            content_type=content_type,
            headers=headers,
        )
    finally:
        context.detach(token)


def declared(broker: RabbitBroker, *, exchange: str, routing_key: str) -> RabbitPublisher:
    """The publisher the broker declared for `exchange` ("" for the default) and `routing_key`."""
    for publisher in broker.publishers:
        if publisher.exchange.name == exchange and publisher.routing() == routing_key:  # type: ignore[attr-defined]
            return publisher  # type: ignore[return-value]
    raise LookupError(f"no publisher declared for {exchange or 'the default exchange'} / {routing_key}")


def retries(broker: RabbitBroker, spec: QueueSpec) -> RabbitPublisher:
    return declared(broker, exchange=REDELIVERIES_EXCHANGE.name, routing_key=spec.retry_name)


def dead_letters(broker: RabbitBroker, spec: QueueSpec) -> RabbitPublisher:
    return declared(broker, exchange=REDELIVERIES_EXCHANGE.name, routing_key=spec.dead_name)


def emitted(broker: RabbitBroker, event: type[Event]) -> RabbitPublisher:
    return declared(broker, exchange=EVENTS_EXCHANGE.name, routing_key=event.event_type)


@dataclass
class Containing:
    """Equal to any string containing `part`: for reasons, which carry details."""

    part: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.part in other

    __hash__ = None  # type: ignore[assignment]


@dataclass
class Captured:
    """Equal to anything, keeping what it was compared with: to read a recorded header."""

    value: Any = None

    def __eq__(self, other: object) -> bool:
        self.value = other
        return True

    __hash__ = None  # type: ignore[assignment]


@dataclass
class OutboxRelayDouble:
    """Stands in for the outbox relay: `wake()` as the handlers call it; `publish_pending()`
    sends what the fake repository queued through the service's EventPublisher, as the relay does
    after the commit."""

    outbox: list[Event]
    publisher: EventPublisher
    woken: int = 0
    sent: list[Event] = field(default_factory=list)

    def wake(self) -> None:
        self.woken += 1

    async def publish_pending(self) -> None:
        while self.outbox:
            event = self.outbox.pop(0)
            await self.publisher.publish(
                event, message_id=f"{getattr(event, 'order_id', '')}:{event.event_type}"
            )
            self.sent.append(event)
