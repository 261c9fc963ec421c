"""A work queue's FastStream subscriber, as FastStream documents several message types on one
queue: one subscriber object, one handler per event type told apart by `filter=`.

    events = work_queue_subscriber(broker, PAYMENTS_QUEUE, settings)

    @events(filter=event_type(OrderCreated))
    async def on_order_created(event: OrderCreated, delivery: CurrentDelivery) -> None: ...

The subscriber comes from a router carrying the queue's DeliveryPolicy middleware (retries,
dead letters, time limit) and reads the queue the topology declared (`declare=False`: bindings
and arguments are the topology's, see broker.declare_topology).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.rabbit import RabbitQueue, RabbitRouter

from lantern_runtime.messaging.consumer import DeliveryPolicy
from lantern_runtime.messaging.topology import EVENTS_EXCHANGE, REDELIVERIES_EXCHANGE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from faststream.message import StreamMessage
    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.subscriber import RabbitSubscriber

    from lantern_runtime.messaging.publisher import Event
    from lantern_runtime.messaging.topology import QueueSpec
    from lantern_runtime.settings import BrokerSettings

__all__ = ["event_type", "work_queue_subscriber"]


def event_type(event: type[Event]) -> Callable[[StreamMessage[Any]], Awaitable[bool]]:
    """A subscriber filter: messages whose AMQP `type` is `event`'s event type.

    Async on purpose: FastStream runs a plain function filter in a worker thread."""
    wanted = event.event_type

    async def is_event(message: StreamMessage[Any]) -> bool:
        return bool(message.raw_message.type == wanted)

    is_event.__name__ = f"is_{wanted.replace('.', '_')}"
    return is_event


def work_queue_subscriber(
    broker: RabbitBroker,
    spec: QueueSpec,
    settings: BrokerSettings,
    *,
    description: str | None = None,
) -> RabbitSubscriber:
    """The one subscriber of `spec`'s work queue, with Lantern's delivery policy around its
    handlers. Its retry and dead-letter publishers are declared on the broker too."""
    # Through lantern.redeliveries by the queues' own names, not the default exchange: the
    # service's user may publish there only to its own queues (see messaging.permissions).
    retry = broker.publisher(
        exchange=REDELIVERIES_EXCHANGE,
        routing_key=spec.retry_name,
        title=f"{spec.retry_name}:Retry",
        description=(
            f"A failed message of {spec.name}, waiting out its delay (per-message TTL) before "
            f"RabbitMQ dead-letters it back onto {spec.name}; headers: x-lantern-attempt (the next "
            "attempt), x-lantern-origin-traceparent, x-lantern-publisher."
        ),
        persist=True,
    )
    dead = broker.publisher(
        exchange=REDELIVERIES_EXCHANGE,
        routing_key=spec.dead_name,
        title=f"{spec.dead_name}:DeadLetter",
        description=(
            f"A message of {spec.name} that cannot succeed (poison, or its last attempt failed), "
            f"bound for {spec.dead_name}; headers: x-lantern-reason, x-lantern-attempt, "
            "x-lantern-queue, x-lantern-origin-traceparent, x-lantern-publisher."
        ),
        persist=True,
    )
    policy = DeliveryPolicy(spec, settings, retry=retry, dead=dead, event_types=spec.routing_keys)
    router = RabbitRouter(middlewares=(policy,))
    subscriber = router.subscriber(
        RabbitQueue(
            spec.name,
            durable=True,
            declare=False,
            # FastStream's schema shows one routing key per subscriber; the queue's bindings are
            # listed in the description. The in-memory test broker routes by this pattern.
            routing_key=_routing_pattern(spec.routing_keys),
        ),
        EVENTS_EXCHANGE,
        title=spec.name,
        description=description
        or f"{spec.name}, bound to {EVENTS_EXCHANGE.name} by {', '.join(spec.routing_keys)}.",
    )
    policy.handler_names = lambda: {call.name for call in subscriber.calls}
    broker.include_router(router)
    return subscriber


def _routing_pattern(routing_keys: tuple[str, ...]) -> str:
    """One key as it is; several as the topic pattern they share (e.g. order.*)."""
    if len(routing_keys) == 1:
        return routing_keys[0]
    prefixes = {key.rsplit(".", 1)[0] for key in routing_keys}
    return f"{prefixes.pop()}.*" if len(prefixes) == 1 else "#"
