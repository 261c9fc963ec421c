"""Queue depths from the broker itself: a passive declare answers with the message count, so no
management plugin is needed, and it creates nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aio_pika
from aio_pika.exceptions import ChannelNotFoundEntity

from lantern_cli.errors import Refused
from lantern_runtime.messaging import Topology, redacted_url
from order_flow.topology import ORDER_FLOW


@dataclass(frozen=True)
class QueueDepth:
    """Messages waiting in a work queue, its delay queue and its dead queue; None: no such queue."""

    queue: str
    work: int | None
    retry: int | None
    dead: int | None

    @property
    def healthy(self) -> bool:
        return None not in (self.work, self.retry, self.dead) and self.dead == 0


async def _depths(amqp_url: str, names: list[str]) -> dict[str, int | None]:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    found: dict[str, int | None] = {}
    try:
        for name in names:
            # A failed passive declare closes its channel: one channel per queue.
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(name, passive=True)
                found[name] = declared.declaration_result.message_count or 0
                await channel.close()
            except ChannelNotFoundEntity:
                found[name] = None
    finally:
        await connection.close()
    return found


def queue_depths(amqp_url: str, topology: Topology = ORDER_FLOW) -> list[QueueDepth]:
    names = [name for spec in topology.queues for name in (spec.name, spec.retry_name, spec.dead_name)]
    try:
        found = asyncio.run(_depths(amqp_url, names))
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as error:
        raise Refused(f"the broker at {redacted_url(amqp_url)} is unreachable: {error}") from error
    return [
        QueueDepth(spec.name, found[spec.name], found[spec.retry_name], found[spec.dead_name])
        for spec in topology.queues
    ]
