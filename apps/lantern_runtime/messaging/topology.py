"""Exchanges and queues, declared the same way by every service so no event is ever unroutable.

Each work queue is a durable quorum queue with a delivery limit. Beside it:
- `<queue>.retry`, a delay queue without consumers: a message waits there for its per-message
  TTL, then RabbitMQ dead-letters it back onto the work queue;
- `<queue>.dead`, where a message ends after its last attempt, or straight away if it is poison:
  a durable classic queue, which has no delivery limit (see `dead_queue`).
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
        # A durable *classic* queue, so that looking at dead letters changes nothing and nothing
        # in it is ever dropped. Quorum queues count returned deliveries toward a delivery limit
        # that defaults to 20 from RabbitMQ 4.0 (https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling);
        # up to 4.2 every return counts, from 4.3 a basic.reject does
        # (https://www.rabbitmq.com/docs/4.3/nack). Past it a message is dead-lettered, or dropped
        # where, as here, there is nowhere further to go. The limit cannot be switched off in a
        # way both 3.x and 4.x read alike: `x-delivery-limit: -1` means "no limit" on 4.x but is
        # taken as 0 by 3.x. A classic queue has no delivery limit at all, and a message it gets
        # back is put back in its place, its headers as they were. No TTL, length limit or
        # expiry either: a dead letter stays until it is replayed or removed on purpose. On 4.x
        # a classic queue has one replica: dead letters are kept on one node's disk.
        return RabbitQueue(self.dead_name, queue_type=QueueType.CLASSIC, durable=True)


@dataclass(frozen=True)
class Topology:
    queues: tuple[QueueSpec, ...]

    def queue(self, name: str) -> QueueSpec:
        for spec in self.queues:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.queues)
        raise KeyError(f"no queue named {name!r} in the topology; known queues: {known}")
