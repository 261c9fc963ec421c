"""`python -m lantern_runtime.messaging.deadletters`: list and replay dead letters.

    list   --queue Q [--queue Q2 ...]  show each dead letter: id, type, attempts, reason
    replay --queue Q [--message-id ID] [--limit N]
                                       put dead letters back on their work queue, attempt 1

Replay goes to the one queue the message failed on (not through the exchange), so other
consumers of the same event do not see it twice. The broker comes from AMQP_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika

from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, QUEUE_HEADER, REASON_HEADER

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

DEAD_SUFFIX = ".dead"


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str | None
    message_type: str | None
    attempts: Any
    reason: str
    body: bytes


def _describe(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(
        queue=queue,
        message_id=message.message_id,
        message_type=message.type,
        attempts=headers.get(ATTEMPT_HEADER),
        reason=str(headers.get(REASON_HEADER, _broker_reason(headers))),
        body=message.body,
    )


def _broker_reason(headers: dict[str, Any]) -> str:
    """Dead-lettered by RabbitMQ itself (rejected, or over the delivery limit): x-death says why."""
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths, list | tuple):
        return f"dead-lettered by RabbitMQ: {dict(deaths[0]).get('reason')}"
    return "unknown"


async def _take_all(channel: AbstractChannel, dead_queue: str) -> list[AbstractIncomingMessage]:
    """Take every message without acking; closing the channel returns those not acked."""
    queue = await channel.get_queue(dead_queue, ensure=True)
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    return taken


async def list_dead_letters(amqp_url: str, queues: list[str]) -> list[DeadLetter]:
    connection = await aio_pika.connect(amqp_url)
    try:
        found = []
        for queue in queues:
            channel = await connection.channel()
            found += [_describe(queue, m) for m in await _take_all(channel, queue + DEAD_SUFFIX)]
            await channel.close()
        return found
    finally:
        await connection.close()


async def replay(
    amqp_url: str, queue: str, *, message_id: str | None = None, limit: int | None = None
) -> int:
    """Republish dead letters onto `queue` (with confirms), then remove them; returns how many."""
    connection = await aio_pika.connect(amqp_url)
    replayed = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        for message in await _take_all(channel, queue + DEAD_SUFFIX):
            if (message_id and message.message_id != message_id) or (limit is not None and replayed >= limit):
                continue
            headers = {
                key: value
                for key, value in (message.headers or {}).items()
                if key
                not in (
                    REASON_HEADER,
                    QUEUE_HEADER,
                    "x-death",
                    "x-first-death-reason",
                    "x-first-death-queue",
                    "x-first-death-exchange",
                )
            }
            headers[ATTEMPT_HEADER] = 1
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    message_id=message.message_id,
                    type=message.type,
                    correlation_id=message.correlation_id,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
                mandatory=True,
            )
            await message.ack()
            replayed += 1
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

    if args.command == "list":
        letters = asyncio.run(list_dead_letters(args.amqp_url, args.queue))
        for letter in letters:
            print(
                f"{letter.queue}\t{letter.message_id}\t{letter.message_type}\tattempts={letter.attempts}\t{letter.reason}"
            )
        print(f"{len(letters)} dead letter(s)")
        return 0
    count = asyncio.run(replay(args.amqp_url, args.queue, message_id=args.message_id, limit=args.limit))
    print(f"replayed {count} message(s) onto {args.queue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
