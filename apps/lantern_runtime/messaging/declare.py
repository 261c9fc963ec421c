"""Declare the topology: `python -m lantern_runtime.messaging.declare COMPONENT`.

    python -m lantern_runtime.messaging.declare orders              # AMQP_URL: the admin's
    python -m lantern_runtime.messaging.declare orders --wait 300   # first wait for the broker

With QUORUM_INITIAL_GROUP_SIZE (or --quorum-initial-group-size) set, each quorum queue is
created with that many replicas (x-quorum-initial-group-size; RabbitMQ places them on as many
nodes as the cluster has, at most). Unset: RabbitMQ's own default.

Every exchange, queue and binding of the topology (order_flow.topology's ORDER_FLOW unless
--topology names another `module:ATTRIBUTE`), declared with a user that may configure them: the
broker's admin. The services' own users may not (lantern_runtime.messaging.permissions); they
look the topology up at start-up and wait, saying so, while it is missing. In Kubernetes each
pod of a component with `amqp` runs this as an init container before the service starts (the
component only names the log lines); the devstack and the test fixtures call
`declare_topology`. Idempotent: declaring what exists with the same arguments changes nothing,
and what a release adds (an exchange, a binding, a queue) is added to an existing broker.

Exit codes: 0 declared; 1 the broker refused a declaration (e.g. a queue declared with other
arguments by another version); 2 bad arguments; 3 the broker did not answer within --wait.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import sys
from typing import TYPE_CHECKING

import aio_pika
from aiormq.exceptions import ChannelClosed, ChannelNotFoundEntity, ChannelPreconditionFailed
from tenacity import AsyncRetrying, RetryError, retry_if_not_exception_type, stop_after_delay
from tenacity import wait_random_exponential as jitter

from lantern_runtime.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    EXCHANGES,
    REDELIVERIES_EXCHANGE,
    Topology,
    TopologyNotDeclared,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aio_pika.abc import AbstractChannel, AbstractConnection
    from faststream.rabbit import RabbitQueue

logger = logging.getLogger("lantern_runtime.messaging.declare")

BROKER_UNREACHABLE = 3
DEFAULT_TOPOLOGY = "order_flow.topology:ORDER_FLOW"
GROUP_SIZE = "x-quorum-initial-group-size"
# RabbitMQ's refusal of a redeclaration with another group size names the one the queue has.
_EXISTING_GROUP_SIZE = re.compile(
    rf"inequivalent arg '{GROUP_SIZE}' .* current is (?:none|(?:the value )?'(?P<size>[0-9]+)')"
)


async def declare_topology(
    amqp_url: str, topology: Topology, *, quorum_group_size: int | None = None
) -> None:
    """Declare every exchange, queue and binding of `topology` (idempotent), each quorum queue
    with `quorum_group_size` replicas when it is created (None: RabbitMQ's default)."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        await _declare(connection, topology, quorum_group_size)
    finally:
        await connection.close()


async def _declare(connection: AbstractConnection, topology: Topology, group_size: int | None) -> None:
    channel = await connection.channel()
    exchanges = {
        exchange.name: await channel.declare_exchange(
            exchange.name, aio_pika.ExchangeType(exchange.type.value), durable=exchange.durable
        )
        for exchange in EXCHANGES
    }
    events = exchanges[EVENTS_EXCHANGE.name]
    dead_letters = exchanges[DEAD_LETTER_EXCHANGE.name]
    redeliveries = exchanges[REDELIVERIES_EXCHANGE.name]
    for spec in topology.queues:
        work = await _declare_quorum_queue(connection, spec.work_queue(), group_size)
        for routing_key in spec.routing_keys:
            await work.bind(events, routing_key=routing_key)
        retry = await _declare_quorum_queue(connection, spec.retry_queue(), group_size)
        await retry.bind(redeliveries, routing_key=spec.retry_name)
        dead = await _declare_queue(channel, spec.dead_queue())
        # RabbitMQ's own dead letters (delivery limit) come by lantern.dead-letters, a
        # consumer's by lantern.redeliveries.
        await dead.bind(dead_letters, routing_key=spec.name)
        await dead.bind(redeliveries, routing_key=spec.dead_name)


async def _declare_queue(channel: AbstractChannel, queue: RabbitQueue) -> aio_pika.abc.AbstractQueue:
    return await channel.declare_queue(queue.name, durable=queue.durable, arguments=queue.arguments)


async def _declare_quorum_queue(
    connection: AbstractConnection, queue: RabbitQueue, group_size: int | None
) -> aio_pika.abc.AbstractQueue:
    """RabbitMQ compares a redeclared queue's group size with the one it was created with, but
    uses it only at creation: a queue that exists keeps its own (a broker grown from one node to
    three, or a group size changed since), and every other argument is still compared."""
    arguments = dict(queue.arguments or {})
    if group_size is not None:
        arguments[GROUP_SIZE] = group_size
    # A channel of its own: a refusal closes the channel it happens on.
    channel = await connection.channel()
    try:
        return await channel.declare_queue(queue.name, durable=queue.durable, arguments=arguments)
    except ChannelPreconditionFailed as error:
        found = _EXISTING_GROUP_SIZE.search(str(error))
        if found is None:
            raise
    existing = found["size"]
    if existing is None:
        del arguments[GROUP_SIZE]
    else:
        arguments[GROUP_SIZE] = int(existing)
    logger.warning(
        f"queue {queue.name} exists with {GROUP_SIZE} {existing or 'unset'}, not {group_size or 'unset'}: "
        "it applies when a queue is created, so this one keeps its replicas (add some with "
        "rabbitmq-queues grow, or let continuous membership reconciliation do it)"
    )
    channel = await connection.channel()
    return await channel.declare_queue(queue.name, durable=queue.durable, arguments=arguments)


async def check_topology(connection: AbstractConnection, topology: Topology) -> None:
    """Raise TopologyNotDeclared naming the first exchange or queue of `topology` missing.

    Passive declares, which need no permission: a service's user may run them. Each on a
    channel of its own, since RabbitMQ closes a channel on which one finds nothing."""
    wanted = [("exchange", exchange.name) for exchange in EXCHANGES]
    wanted += [
        ("queue", name) for spec in topology.queues for name in (spec.name, spec.retry_name, spec.dead_name)
    ]
    for kind, name in wanted:
        channel = await connection.channel(publisher_confirms=False)
        try:
            if kind == "exchange":
                await channel.get_exchange(name, ensure=True)
            else:
                await channel.get_queue(name, ensure=True)
        except ChannelNotFoundEntity as error:
            raise TopologyNotDeclared(
                f"{kind} {name} is not declared; run the topology step "
                "(python -m lantern_runtime.messaging.declare, an init container in the chart) "
                "with the broker's admin user"
            ) from error
        finally:
            if not channel.is_closed:
                await channel.close()


def load_topology(reference: str) -> Topology:
    module, _, attribute = reference.partition(":")
    topology = getattr(importlib.import_module(module), attribute or "ORDER_FLOW", None)
    if not isinstance(topology, Topology):
        raise LookupError(f"{reference} is not a Topology")
    return topology


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lantern_runtime.messaging.declare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("component", help="the component whose pod runs it (named in the log lines)")
    parser.add_argument(
        "--topology", default=DEFAULT_TOPOLOGY, help=f"module:ATTRIBUTE (default {DEFAULT_TOPOLOGY})"
    )
    parser.add_argument("--amqp-url", help="default: AMQP_URL (a user that may configure the topology)")
    parser.add_argument(
        "--quorum-initial-group-size",
        type=_group_size,
        default=os.environ.get("QUORUM_INITIAL_GROUP_SIZE") or None,
        help="replicas of each quorum queue created (default: QUORUM_INITIAL_GROUP_SIZE, else RabbitMQ's)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to keep retrying while the broker does not answer (default: one try)",
    )
    return parser


def _group_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a replica count: a whole number, 1 or more")
    return int(text)


async def _run(amqp_url: str, topology: Topology, wait: float, component: str, group_size: int | None) -> int:
    # Here, not at the top: lantern_runtime.startup imports this package.
    from lantern_runtime.messaging.broker import redacted_url
    from lantern_runtime.startup import explain, log_waits

    url = redacted_url(amqp_url)
    retrying = AsyncRetrying(
        stop=stop_after_delay(wait),
        wait=jitter(multiplier=0.5, max=5.0),
        # Anything but a refusal is worth another try until the deadline: a broker still
        # starting, a name not yet in DNS, credentials not yet imported from the definitions.
        retry=retry_if_not_exception_type(ChannelClosed),
        before_sleep=log_waits(logger, f"waiting for the broker at {url} to declare the topology", amqp_url),
    )
    try:
        async for attempt in retrying:
            with attempt:
                await declare_topology(amqp_url, topology, quorum_group_size=group_size)
    except RetryError as error:
        last = error.last_attempt.exception()
        reason = explain(last, amqp_url) if last is not None else "no answer"
        logger.error(f"the broker at {url} did not answer within {wait:g} s: {reason}")
        return BROKER_UNREACHABLE
    except ChannelClosed as error:
        logger.error(f"the broker at {url} refused the topology: {explain(error, amqp_url)}")
        return 1
    names = ", ".join(spec.name for spec in topology.queues)
    logger.info(f"topology declared for {component}: {len(topology.queues)} work queues ({names})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lantern_runtime.telemetry import JsonLogFormatter

    parser = build_parser()
    arguments = parser.parse_args(argv)
    amqp_url = arguments.amqp_url or os.environ.get("AMQP_URL")
    if not amqp_url:
        parser.error("no broker: set AMQP_URL or pass --amqp-url")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter(arguments.component))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        topology = load_topology(arguments.topology)
    except (ImportError, LookupError) as error:
        logger.error(f"no topology {arguments.topology!r}: {error}")
        return 2
    group_size = arguments.quorum_initial_group_size
    return asyncio.run(_run(amqp_url, topology, arguments.wait, arguments.component, group_size))


if __name__ == "__main__":
    sys.exit(main())
