"""Exchanges and queues, declared the same way by every service so no event is ever unroutable.

Each work queue is a durable quorum queue with a delivery limit. Beside it:
- `<queue>.retry`, a delay queue without consumers: a message waits there for its per-message
  TTL, then RabbitMQ dead-letters it back onto the work queue;
- `<queue>.dead`, where a message ends after its last attempt, or straight away if it is poison.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

# Redeliveries (a consumer crashing mid-message) before RabbitMQ dead-letters a message itself.
# A property of the queue, the same for every service that declares it: retries of a failing
# handler are counted separately, per service, in the x-lantern-attempt header.
DELIVERY_LIMIT = 20

EVENTS_EXCHANGE = RabbitExchange("lantern.events", type=ExchangeType.TOPIC, durable=True)
DEAD_LETTER_EXCHANGE = RabbitExchange("lantern.dead-letters", type=ExchangeType.DIRECT, durable=True)


@dataclass(frozen=True)
class QueueSpec:
    """A work queue and the event types (routing keys) bound to it."""

    name: str
    routing_keys: tuple[str, ...]

    @property
    def retry_name(self) -> str:
        return f"{self.name}.retry"

    @property
    def dead_name(self) -> str:
        return f"{self.name}.dead"

    def work_queue(self, delivery_limit: int = DELIVERY_LIMIT) -> RabbitQueue:
        return RabbitQueue(
            self.name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments={
                # A consumer that crashes mid-message redelivers it; the limit stops a crash loop.
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
                "x-dead-letter-routing-key": self.name,
            },
        )

    def retry_queue(self) -> RabbitQueue:
        return RabbitQueue(
            self.retry_name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments={
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.name,
            },
        )

    def dead_queue(self) -> RabbitQueue:
        return RabbitQueue(self.dead_name, queue_type=QueueType.QUORUM, durable=True)


@dataclass(frozen=True)
class Topology:
    queues: tuple[QueueSpec, ...]

    def queue(self, name: str) -> QueueSpec:
        for spec in self.queues:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.queues)
        raise KeyError(f"no queue named {name!r} in the topology; known queues: {known}")
