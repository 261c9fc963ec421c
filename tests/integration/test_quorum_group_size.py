"""The topology step creates quorum queues with the replica count it is given
(x-quorum-initial-group-size, the chart's rabbitmq.quorumInitialGroupSize), and a queue that
already exists keeps the one it was created with instead of failing the step."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed

from lantern_runtime.messaging import QueueSpec, Topology, declare_topology
from lantern_runtime.messaging.declare import GROUP_SIZE
from tests.integration.conftest import queues_in

pytestmark = pytest.mark.rabbitmq

SPEC = QueueSpec("tests.replicated", ("replica.made",))
# What the CLI test declares (module:ATTRIBUTE, as --topology names it).
TOPOLOGY = Topology((SPEC,))


def members_of(amqp_url: str) -> dict[str, list[str]]:
    vhost = amqp_url.rsplit("/", 1)[1]
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "members", "--formatter", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {queue["name"]: queue["members"] for queue in json.loads(listed)}


def group_sizes(amqp_url: str) -> dict[str, int | None]:
    return {name: queue["arguments"].get(GROUP_SIZE) for name, queue in queues_in(amqp_url).items()}


async def test_quorum_queues_are_created_with_the_group_size_and_the_dead_queue_without(
    amqp_url: str,
) -> None:
    await declare_topology(amqp_url, TOPOLOGY, quorum_group_size=3)
    sizes = group_sizes(amqp_url)
    assert sizes[SPEC.name] == sizes[SPEC.retry_name] == 3
    # A classic queue has one replica and refuses the argument.
    assert sizes[SPEC.dead_name] is None


async def test_without_a_group_size_queues_are_declared_as_before(amqp_url: str) -> None:
    await declare_topology(amqp_url, TOPOLOGY)
    sizes = group_sizes(amqp_url)
    assert sizes[SPEC.name] is sizes[SPEC.retry_name] is None


async def test_a_one_node_broker_gives_a_queue_asking_for_three_replicas_one(amqp_url: str) -> None:
    """RabbitMQ places at most one replica per node, so the chart's value is safe to set
    before the other nodes have joined (they get replicas by reconciliation, not here)."""
    await declare_topology(amqp_url, TOPOLOGY, quorum_group_size=3)
    members = members_of(amqp_url)
    assert len(members[SPEC.name]) == 1, members


@pytest.mark.parametrize(("created_with", "asked"), [(None, 3), (3, 5), (3, None)])
async def test_a_queue_that_exists_keeps_its_group_size_and_the_step_says_so(
    amqp_url: str, caplog: pytest.LogCaptureFixture, created_with: int | None, asked: int | None
) -> None:
    """A broker grown from one node to three, or the value changed: RabbitMQ would refuse the
    redeclaration (it compares the argument), though it uses it only when creating a queue."""
    await declare_topology(amqp_url, TOPOLOGY, quorum_group_size=created_with)
    with caplog.at_level(logging.WARNING, logger="lantern_runtime.messaging.declare"):
        await declare_topology(amqp_url, TOPOLOGY, quorum_group_size=asked)
    sizes = group_sizes(amqp_url)
    assert sizes[SPEC.name] == sizes[SPEC.retry_name] == created_with
    warned = [r.getMessage() for r in caplog.records if SPEC.name in r.getMessage()]
    assert any(f"exists with {GROUP_SIZE} {created_with or 'unset'}" in line for line in warned), warned
    assert any("rabbitmq-queues grow" in line for line in warned), warned


async def test_other_arguments_are_still_compared_when_the_group_size_differs(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        # The work queue as an older release declared it: no at-least-once dead-lettering.
        await channel.declare_queue(
            SPEC.name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 20,
                "x-dead-letter-exchange": "lantern.dead-letters",
                "x-dead-letter-routing-key": SPEC.name,
                GROUP_SIZE: 1,
            },
        )
    with pytest.raises(
        ChannelPreconditionFailed, match=r"inequivalent arg 'x-(dead-letter-strategy|overflow)'"
    ):
        await declare_topology(amqp_url, TOPOLOGY, quorum_group_size=3)


def run_declare(amqp_url: str, *args: str, group_size: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "QUORUM_INITIAL_GROUP_SIZE"}
    env["AMQP_URL"] = amqp_url
    if group_size is not None:
        env["QUORUM_INITIAL_GROUP_SIZE"] = group_size
    command = [sys.executable, "-m", "lantern_runtime.messaging.declare", "tests"]
    command += ["--topology", f"{__name__}:TOPOLOGY", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_topology_step_reads_the_group_size_the_chart_sets(amqp_url: str) -> None:
    """As the chart's init container runs it: QUORUM_INITIAL_GROUP_SIZE in its environment."""
    done = run_declare(amqp_url, group_size="3")
    assert done.returncode == 0, done.stderr
    assert group_sizes(amqp_url)[SPEC.name] == 3


@pytest.mark.parametrize("bad", ["0", "three"])
def test_a_group_size_that_is_not_a_replica_count_is_refused_naming_it(amqp_url: str, bad: str) -> None:
    done = run_declare(amqp_url, group_size=bad)
    assert done.returncode == 2
    assert f"{bad!r} is not a replica count" in done.stderr
    assert SPEC.name not in queues_in(amqp_url)
