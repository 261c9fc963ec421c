"""`python -m lantern_runtime.messaging.deadletters`: list and replay dead letters.

    list   --queue Q [--queue Q2 ...]  show each dead letter: id, type, attempts, reason
    replay --queue Q [--message-id ID] [--limit N]
                                       put dead letters back on their work queue, attempt 1

Looking changes nothing: `<Q>.dead` is a classic queue (see topology.QueueSpec.dead_queue), so
a message read and given back returns to its place with its headers as they were, however often
it is listed. A `.dead` queue of the older quorum kind, where each look counts as a delivery, is
refused with the migration to make. Replay publishes each chosen message (with publisher
confirms, keeping its trace headers) to the one queue it failed on, not through the exchange,
so other consumers of the same event do not see it twice; only once the broker has confirmed it
is the dead letter removed, and the others are given back untouched. The broker comes from
AMQP_URL: the admin's, since the services' users may read no dead queue.

Who published: a dead letter's `publisher` is the user that first published the message (the
x-lantern-publisher header a consumer adds when it dead-letters, else the message's user_id,
which RabbitMQ checked). A replay is published by the replaying user: RabbitMQ refuses a publish
whose user_id is not the connecting user's (unless that user has the `impersonator` tag, which
Lantern gives no one), so the replayed copy carries the replaying user's user_id, and keeps the
first publisher in x-lantern-publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.exceptions import ChannelPreconditionFailed

from lantern_runtime.messaging.broker import broker_user
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, PUBLISHER_HEADER, QUEUE_HEADER, REASON_HEADER
from lantern_runtime.messaging.topology import QueueSpec

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

DEAD_SUFFIX = ".dead"
# What dead-lettering added; a replayed message starts again as it was first published.
_DEAD_LETTER_HEADERS = frozenset(
    {
        REASON_HEADER,
        QUEUE_HEADER,
        "x-death",
        "x-first-death-reason",
        "x-first-death-queue",
        "x-first-death-exchange",
        "x-last-death-reason",
        "x-last-death-queue",
        "x-last-death-exchange",
        "x-delivery-count",
    }
)


class DeadQueueNeedsMigration(Exception):
    """The `.dead` queue is of the older quorum kind: reading it would count as a delivery."""


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str | None
    message_type: str | None
    attempts: Any
    reason: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    # The broker user that first published it (see the module's docstring).
    publisher: str | None = None


def _describe(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    return DeadLetter(
        queue=queue,
        message_id=message.message_id,
        message_type=message.type,
        attempts=headers.get(ATTEMPT_HEADER),
        reason=str(headers.get(REASON_HEADER, _broker_reason(headers))),
        body=message.body,
        headers=headers,
        publisher=_publisher_of(message),
    )


def _publisher_of(message: AbstractIncomingMessage) -> str | None:
    first = (message.headers or {}).get(PUBLISHER_HEADER)
    if isinstance(first, bytes):
        first = first.decode(errors="replace")
    return str(first) if first else message.user_id


def _broker_reason(headers: dict[str, Any]) -> str:
    """Dead-lettered by RabbitMQ itself (rejected, or over the delivery limit): x-death says why."""
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths, list | tuple):
        return f"dead-lettered by RabbitMQ: {dict(deaths[0]).get('reason')}"
    return "unknown"


async def _dead_queue(connection: AbstractConnection, queue: str) -> tuple[AbstractChannel, str]:
    """A channel on which `queue`'s dead queue is declared as the topology has it.

    Declaring (not just looking up) checks the queue's kind: a quorum `.dead` queue from before
    fails the declaration, and is then left alone."""
    spec = QueueSpec(queue, ())
    declared = spec.dead_queue()
    channel = await connection.channel(publisher_confirms=True)
    try:
        await channel.declare_queue(declared.name, durable=True, arguments=declared.arguments)
    except ChannelPreconditionFailed as error:
        raise DeadQueueNeedsMigration(
            f"{declared.name} is not a durable classic queue (it is likely the quorum kind of "
            "earlier versions, where each look counts toward a delivery limit), so it is not "
            f"read. Move its messages to a new classic {declared.name} first; see the README, "
            f"'Dead letters'. RabbitMQ said: {error}"
        ) from error
    return channel, declared.name


async def _take_all(channel: AbstractChannel, dead_queue: str) -> list[AbstractIncomingMessage]:
    """Every message, taken unacknowledged: each must then be acked or given back."""
    queue = await channel.get_queue(dead_queue, ensure=False)
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    return taken


async def _give_back(messages: list[AbstractIncomingMessage]) -> None:
    # basic.nack with requeue: a classic queue puts each back in its place. (Were it a quorum
    # queue on 4.3+, a nack, unlike a reject, would not count as a failed delivery either.)
    for message in messages:
        await message.nack(requeue=True)


async def list_dead_letters(amqp_url: str, queues: list[str]) -> list[DeadLetter]:
    connection = await aio_pika.connect(amqp_url)
    try:
        found = []
        for queue in queues:
            channel, dead_queue = await _dead_queue(connection, queue)
            taken = await _take_all(channel, dead_queue)
            found += [_describe(queue, message) for message in taken]
            await _give_back(taken)
            await channel.close()
        return found
    finally:
        await connection.close()


async def replay(
    amqp_url: str, queue: str, *, message_id: str | None = None, limit: int | None = None
) -> int:
    """Republish dead letters onto `queue` (with confirms), then remove them; returns how many."""
    connection = await aio_pika.connect(amqp_url)
    replaying_user = broker_user(amqp_url)
    replayed = 0
    try:
        channel, dead_queue = await _dead_queue(connection, queue)
        taken = await _take_all(channel, dead_queue)
        chosen = [m for m in taken if message_id is None or m.message_id == message_id][:limit]
        kept = [m for m in taken if m not in chosen]
        try:
            for message in chosen:
                headers = {k: v for k, v in (message.headers or {}).items() if k not in _DEAD_LETTER_HEADERS}
                headers[ATTEMPT_HEADER] = 1
                if (first := _publisher_of(message)) is not None:
                    headers[PUBLISHER_HEADER] = first
                # Waits for the broker's confirm; an unroutable message (mandatory) raises.
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body,
                        headers=headers,
                        message_id=message.message_id,
                        type=message.type,
                        correlation_id=message.correlation_id,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        user_id=replaying_user,
                    ),
                    routing_key=queue,
                    mandatory=True,
                )
                await message.ack()
                replayed += 1
        finally:
            # Whatever happens, what was not replayed goes back where it was.
            await _give_back(kept + chosen[replayed:])
            await channel.close()
    finally:
        await connection.close()
    return replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lantern_runtime.messaging.deadletters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list")
    show.add_argument("--queue", action="append", required=True, help="work queue name; repeat for more")
    again = commands.add_parser("replay")
    again.add_argument("--queue", required=True)
    again.add_argument("--message-id")
    again.add_argument("--limit", type=int)
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            letters = asyncio.run(list_dead_letters(args.amqp_url, args.queue))
            for letter in letters:
                print(
                    f"{letter.queue}\t{letter.message_id}\t{letter.message_type}"
                    f"\tattempts={letter.attempts}\tpublisher={letter.publisher}\t{letter.reason}"
                )
            print(f"{len(letters)} dead letter(s)")
            return 0
        count = asyncio.run(replay(args.amqp_url, args.queue, message_id=args.message_id, limit=args.limit))
    except DeadQueueNeedsMigration as error:
        print(error, file=sys.stderr)
        return 2
    print(f"replayed {count} message(s) onto {args.queue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
