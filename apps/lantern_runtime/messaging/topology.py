"""Exchanges and queues. A privileged step declares all of them before any service starts
(lantern_runtime.messaging.declare: an init container in the chart, the devstack, the test
fixtures), so no event is ever unroutable; the services only look them up (passive declares),
since their broker users may not configure anything (lantern_runtime.messaging.permissions).

Each work queue is a durable quorum queue with a delivery limit. Beside it:
- `<queue>.retry`, a delay queue without consumers: a message waits there for its per-message
  TTL, then RabbitMQ dead-letters it back onto the work queue;
- `<queue>.dead`, where a message ends after its last attempt, or straight away if it is poison:
  a durable classic queue, which has no delivery limit (see `dead_queue`).

A consumer sends a message to either through the topic exchange `lantern.redeliveries`, routed by
the queue's own name (`<queue>.retry`, `<queue>.dead`), never through the default exchange: write
on the default exchange reaches every queue by name, whereas topic permissions on
lantern.redeliveries limit each service's user to its own queues' keys. RabbitMQ's own dead
lettering (a delivery limit, the delay queue's TTL) uses the queues' x-dead-letter-exchange
arguments and needs no user permission.

Work and delay queues dead-letter **at least once** (RabbitMQ 3.10+, quorum queues only;
https://www.rabbitmq.com/docs/quorum-queues#dead-lettering): the source queue keeps a
dead-lettered message until the queue it goes to has confirmed it, instead of sending it once
without confirms and forgetting it. RabbitMQ applies that strategy only with `x-overflow:
reject-publish`, so a full queue refuses a publish (the publisher gets a nack) rather than dropping
its oldest message. What a refused transfer costs: RabbitMQ retries it after
`dead_letter_worker_publisher_confirm_timeout` (180 s by default) or when the queue restarts, and a
retried transfer may arrive twice, which the consumers' inboxes absorb.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import QuorumQueueArgs

# Redeliveries (a consumer crashing mid-message) before RabbitMQ dead-letters a message itself.
# A property of the queue, the same for every service that declares it: retries of a failing
# handler are counted separately, per service, in the x-lantern-attempt header.
DELIVERY_LIMIT = 20

# Messages a work or delay queue holds before RabbitMQ refuses publishes to it (it may overshoot
# by the few already in flight). Room for about an hour of backlog at the benchmark's 25 orders/s
# behind a consumer that is down; past that, one queue's publishers are refused at the queue
# (orders' outbox keeps its rows, a consumer's publish fails its handler, which is retried or
# dead-lettered with the reason) instead of the backlog filling the broker's disk, whose alarm
# would block every publisher of every queue. About 100 MB of small events a queue, six queues
# within the chart's 2 GiB volume. Dead-lettered messages not yet confirmed count toward it.
MAX_QUEUE_LENGTH = 100_000

# As the services see them: looked up, never declared (declare=False is a passive declare, which
# needs no permission); lantern_runtime.messaging.declare declares them.
EVENTS_EXCHANGE = RabbitExchange("lantern.events", type=ExchangeType.TOPIC, durable=True, declare=False)
# Where RabbitMQ itself dead-letters a work queue's message (x-dead-letter-exchange).
DEAD_LETTER_EXCHANGE = RabbitExchange(
    "lantern.dead-letters", type=ExchangeType.DIRECT, durable=True, declare=False
)
# Where a consumer sends a message to its queue's delay or dead queue, by the queue's name.
REDELIVERIES_EXCHANGE = RabbitExchange(
    "lantern.redeliveries", type=ExchangeType.TOPIC, durable=True, declare=False
)
EXCHANGES = (EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE, REDELIVERIES_EXCHANGE)


class TopologyNotDeclared(Exception):
    """A queue or exchange a service looks up does not exist: the topology step has not run."""


@dataclass(frozen=True)
class QueueSpec:
    """A work queue and the event types (routing keys) bound to it."""

    name: str
    routing_keys: tuple[str, ...]
    # Of the work queue and of its delay queue, each (see MAX_QUEUE_LENGTH).
    max_length: int = MAX_QUEUE_LENGTH

    @property
    def owner(self) -> str:
        """The component that consumes it: work queues are named `<component>.<what>`."""
        return self.name.split(".", 1)[0]

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
                **self._at_least_once(),
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
                **self._at_least_once(),
            },
        )

    def _at_least_once(self) -> QuorumQueueArgs:
        # Under the default overflow (drop-head) RabbitMQ falls back to at-most-once with only a
        # log line. The length limit is what makes reject-publish ever refuse (MAX_QUEUE_LENGTH).
        return {
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-max-length": self.max_length,
        }

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
