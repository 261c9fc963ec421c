"""Lantern on a three-node RabbitMQ 4.0 cluster, losing nodes mid-burst.

Three RabbitMQ containers clustered by a classic peer list, every one of them under the name
`rabbitmq` as a Kubernetes Service's endpoints are; the five services on that name. The
topology is declared through node 0 before the services start (their own topology steps then
find it in place): quorum queues are created with three replicas and, RabbitMQ placing a
queue's leader on the node its declaring client is connected to, node 0 leads them all and
the last node none. During a paced burst of orders through the gateway, the node that leads no
queue is killed and started again, then the node that leads payments.order-events. Proven:
every order final once, authorized once (the bank's authorize calls counted in the traces, not
its records, which are one per key), notified once, the outboxes drained, the services ready
again without a restart. How long each service was not ready and the orders' latency are
printed in the tier's summary (conftest.FAILOVER).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lantern_runtime.messaging.broker import broker_user
from lantern_runtime.smoke import ORDER, mint_token
from lantern_runtime.trace_contract import CONSUMER, SERVER, Span
from order_flow.topology import ORDER_FLOW, PAYMENTS_QUEUE
from tests.containers.conftest import FAILOVER
from tests.containers.images import docker
from tests.containers.test_chart_on_real_images import as_customer
from tests.faults.conftest import (
    FINAL,
    authorizations_by_order,
    bank_problems,
    bank_requests_by_order,
    notifications_by_order,
    resends,
    wait_for,
    wait_until_final,
)

if TYPE_CHECKING:
    from tests.containers.platform import Platform

pytestmark = [pytest.mark.containers, pytest.mark.rabbitmq_cluster, pytest.mark.timeout(600)]

NODES = 3
MIN_ORDERS = 300
# Orders a second from one client: under the gateway's limit for one subject (edge.rateLimit).
RATE = 10
# Sends of one order (the same Idempotency-Key) before it counts as not placed.
SENDS = 6
# How long each killed node stays down.
DOWN_SECONDS = 10
SUBJECT = "helm-test"  # the smoke token's


def rabbitmqctl(platform: Platform, node: str, *argv: str, timeout: float = 60) -> str:
    container = platform.container(node)
    return docker("exec", "--user", "rabbitmq", container, "rabbitmqctl", *argv, timeout=timeout).stdout


def running_nodes(platform: Platform, via: str) -> list[str]:
    out = docker(
        "exec", "--user", "rabbitmq", platform.container(via),
        "rabbitmqctl", "cluster_status", "--formatter", "json", check=False, timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        return []
    return sorted(json.loads(out.stdout).get("running_nodes", []))


def lantern_queues(platform: Platform, via: str) -> dict[str, dict[str, Any]]:
    """Lantern's queues as RabbitMQ lists them: type, leader and members."""
    rows = json.loads(
        rabbitmqctl(platform, via, "list_queues", "--formatter", "json", "name", "type", "leader", "members")
    )
    names = {n for spec in ORDER_FLOW.queues for n in (spec.name, spec.retry_name, spec.dead_name)}
    return {row["name"]: row for row in rows if row["name"] in names}


def connected_users(platform: Platform, nodes: list[str], via: str) -> dict[str, list[str]]:
    """The broker users with a connection on each node, told by the address they reached."""
    node_of = {
        platform.ip(node): node
        for node in nodes
        if platform.container_state(platform.container(node))["Running"]
    }
    rows = json.loads(rabbitmqctl(platform, via, "list_connections", "--formatter", "json", "user", "host"))
    by_node: dict[str, list[str]] = {}
    for row in rows:
        host = row["host"]
        if isinstance(host, list):  # the JSON formatter's address: IPv4-mapped IPv6 words
            host = str(ipaddress.IPv6Address(bytes(b for word in host for b in word.to_bytes(2))).ipv4_mapped)
        by_node.setdefault(node_of.get(str(host), str(host)), []).append(row["user"])
    return {node: sorted(users) for node, users in by_node.items()}


def wait_clustered(platform: Platform, nodes: list[str], via: str, timeout: float = 180) -> None:
    expected = sorted(f"rabbit@{n}" for n in nodes)

    def formed() -> bool:
        exited = [n for n in nodes if not platform.container_state(platform.container(n))["Running"]]
        assert not exited, {n: platform.logs(n)[-2000:] for n in exited}
        return running_nodes(platform, via) == expected

    assert wait_for(formed, timeout), (
        running_nodes(platform, via),
        {n: platform.logs(n)[-2000:] for n in nodes},
    )


@pytest.fixture(scope="module")
def cluster(images: dict[str, str], platform: Platform) -> list[str]:
    nodes = platform.add_rabbitmq_cluster(NODES)
    platform.start_stand_in("postgres")
    # Together, as a StatefulSet with parallel pod management starts them: a new node waits in
    # peer discovery for the peers of its list, then joins the one they agree on.
    for node in nodes:
        platform.start_node(node)
    wait_clustered(platform, nodes, nodes[0])
    admin_url = platform.render.secret_data("rabbitmq-credentials")["url"]
    through_first = admin_url.replace("@rabbitmq:", f"@{nodes[0]}:")
    assert through_first != admin_url, "the admin's URL no longer names the Service rabbitmq"
    docker(
        "run", "--rm", "--network", platform.network, images["orders"],
        "python", "-m", "lantern_runtime.messaging.declare", "cluster-test",
        "--amqp-url", through_first, "--quorum-initial-group-size", str(NODES), "--wait", "120",
        timeout=300,
    )  # fmt: skip
    for name in platform.services:
        platform.start_service(name)
    platform.wait_ready(platform.services, timeout=300)
    return nodes


@dataclass
class Burst:
    """Orders through the gateway at RATE a second until stopped, and at least MIN_ORDERS. A
    refused or unanswered order is sent again under its Idempotency-Key, as a client would, so
    that a gateway shedding load on a starved machine (429, 503, 504) loses no order either."""

    gateway_url: str
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    # order id -> (the traces of its sends, monotonic second it was first sent)
    placed: dict[str, tuple[list[str], float]] = field(default_factory=dict)
    # Answers other than 202 (or errors) that were sent again, and orders never accepted.
    resent: Counter[str] = field(default_factory=Counter)
    unplaced: list[str] = field(default_factory=list)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.gateway_url, headers=headers, timeout=30) as client:
            tasks = []
            while len(tasks) < MIN_ORDERS or not self.stop.is_set():
                tasks.append(asyncio.create_task(self._one(client)))
                # No catching up after a stall: the rate stays under the gateway's limit.
                await asyncio.sleep(1 / RATE)
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient) -> None:
        key, first_sent, traces = str(uuid.uuid4()), time.monotonic(), []
        for attempt in range(SENDS):
            try:
                answer = await client.post("/api/orders", json=ORDER, headers={"Idempotency-Key": key})
            except httpx.TransportError as error:
                self.resent[type(error).__name__] += 1
            else:
                # A send the gateway gave up on may still have placed the order, in its own trace.
                if "traceresponse" in answer.headers:
                    traces.append(answer.headers["traceresponse"].split("-")[1])
                if answer.status_code == 202:
                    self.placed[answer.json()["order_id"]] = (traces, first_sent)
                    return
                self.resent[str(answer.status_code)] += 1
            await asyncio.sleep(2**attempt)
        self.unplaced.append(key)


@dataclass
class Readiness:
    """Each service's /readyz polled until stopped: the seconds it answered anything but 200."""

    urls: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    not_ready: dict[str, float] = field(default_factory=dict)
    longest: dict[str, float] = field(default_factory=dict)

    def run(self) -> None:
        since: dict[str, float | None] = dict.fromkeys(self.urls)
        self.not_ready = dict.fromkeys(self.urls, 0.0)
        self.longest = dict.fromkeys(self.urls, 0.0)
        with httpx.Client(timeout=1) as client:
            while not self.stop.is_set():
                for name, url in self.urls.items():
                    try:
                        ready = client.get(url).status_code == 200
                    except httpx.TransportError:
                        ready = False
                    now = time.monotonic()
                    if not ready and since[name] is None:
                        since[name] = now
                    elif ready and (start := since[name]) is not None:
                        self.not_ready[name] += now - start
                        self.longest[name] = max(self.longest[name], now - start)
                        since[name] = None
                time.sleep(0.2)
        for name, start in since.items():
            if start is not None:
                self.not_ready[name] += time.monotonic() - start


def readiness_urls(platform: Platform) -> dict[str, str]:
    urls = {}
    for name in platform.services:
        path, port = platform.runs[name].probe_port("readinessProbe")
        urls[name] = f"http://{platform.ip(name)}:{port}{path}"
    return urls


def unsent_outbox_rows(platform: Platform) -> dict[str, int]:
    """Rows not yet published, in each service database that has an outbox."""

    def psql(database: str, query: str) -> str:
        user = platform.runs["postgres"].env["POSTGRES_USER"]
        argv = ["exec", platform.container("postgres"), "psql", "-U", user, "-d", database, "-tAc", query]
        return docker(*argv).stdout.strip()

    return {
        database: int(psql(database, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        for database in ("orders", "payments", "notifier")
        if psql(database, "SELECT to_regclass('outbox') IS NOT NULL") == "t"
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def kill(platform: Platform, node: str) -> None:
    docker("kill", platform.container(node))
    assert platform.container_state(platform.container(node))["ExitCode"] == 137


def test_killing_a_node_then_the_leader_of_payments_queue_mid_burst_loses_nothing_and_doubles_nothing(
    platform: Platform, cluster: list[str]
) -> None:
    nodes = cluster
    queues = lantern_queues(platform, nodes[0])
    quorum = {name: q for name, q in queues.items() if q["type"] == "quorum"}
    assert {name: len(q["members"]) for name, q in quorum.items()} == dict.fromkeys(quorum, NODES)
    leader = str(queues[PAYMENTS_QUEUE.name]["leader"]).removeprefix("rabbit@")
    leading = {str(q["leader"]).removeprefix("rabbit@") for q in queues.values()}
    idle = next((n for n in nodes if n not in leading), None)
    assert idle is not None, {name: q["leader"] for name, q in queues.items()}
    started_at = {name: platform.state(name)["StartedAt"] for name in platform.services}

    secret = platform.render.secret_data("gateway-auth")["jwt-secret"]
    burst = Burst(platform.url("gateway"), mint_token(secret, ttl=900))
    readiness = Readiness(readiness_urls(platform))
    threads = [threading.Thread(target=burst.run), threading.Thread(target=readiness.run)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: len(burst.placed) >= 3 * RATE, 60), burst.resent
        dropped = {idle: connected_users(platform, nodes, leader).get(idle, [])}
        first_kill = time.monotonic()
        kill(platform, idle)
        time.sleep(DOWN_SECONDS)
        platform.start_node(idle)
        wait_clustered(platform, nodes, leader)
        assert threads[0].is_alive(), "the burst ended before the leader was killed"
        dropped[leader] = connected_users(platform, nodes, leader).get(leader, [])
        kill(platform, leader)
        killed_at = time.monotonic()
        survivor = next(n for n in nodes if n != leader)
        new_leader = ""

        def elected() -> bool:
            nonlocal new_leader
            try:
                new_leader = str(lantern_queues(platform, survivor)[PAYMENTS_QUEUE.name]["leader"])
            except AssertionError:  # rabbitmqctl itself may time out mid-election
                return False
            return new_leader.removeprefix("rabbit@") not in ("", leader)

        assert wait_for(elected, 60), new_leader
        election = time.monotonic() - killed_at
        time.sleep(max(0.0, DOWN_SECONDS - election))
        platform.start_node(leader)
        wait_clustered(platform, nodes, survivor)
    finally:
        burst.stop.set()
        threads[0].join(timeout=300)
        platform.wait_ready(platform.services, timeout=180)
        readiness.stop.set()
        threads[1].join(timeout=30)

    order_ids = list(burst.placed)
    assert len(order_ids) >= MIN_ORDERS and not burst.unplaced, (len(order_ids), burst.unplaced, burst.resent)
    auth = as_customer(platform, SUBJECT)
    statuses = wait_until_final(platform.url("orders"), order_ids, timeout=240, auth=auth)
    assert set(statuses.values()) <= FINAL, Counter(statuses.values())

    # Each order's effects where nothing dedups them: every call the bank received about it.
    records = authorizations_by_order(platform.url("bank"), order_ids)
    requests = bank_requests_by_order(platform.url("bank"), order_ids)
    problems = bank_problems(statuses, records, requests)
    assert not problems, f"{len(problems)} orders wrong at bank: {problems[:10]}"
    asked = resends(requests)
    assert wait_for(
        lambda: set(notifications_by_order(platform.url("notifier"), order_ids).values()) == {1}, 60
    )
    assert wait_for(lambda: set(unsent_outbox_rows(platform).values()) == {0}, 60), unsent_outbox_rows(
        platform
    )
    # Reconnected by themselves: connected again, the same processes as before the kills.
    users = {broker_user(run.env["AMQP_URL"]) for run in platform.runs.values() if "AMQP_URL" in run.env}
    connected = {user for found in connected_users(platform, nodes, nodes[0]).values() for user in found}
    assert users <= connected, (users, connected)
    assert {name: platform.state(name)["StartedAt"] for name in platform.services} == started_at

    # From the traces, which a starved machine's exporters may have left incomplete.
    wait_for(lambda: len(traced_finals(platform, burst)) == len(order_ids), 30)
    finals = traced_finals(platform, burst)
    latencies = list(finals.values())
    before = [seconds for order_id, seconds in finals.items() if burst.placed[order_id][1] < first_kill]
    assert len(latencies) >= len(order_ids) // 2, f"{len(latencies)} of {len(order_ids)} orders traced whole"
    FAILOVER["nodes"] = (
        f"{NODES} RabbitMQ nodes, one name; killed {idle} (leading no queue), then {leader} "
        f"(leading {PAYMENTS_QUEUE.name}), each down {DOWN_SECONDS} s; new leader "
        f"{new_leader} elected within {election:.1f} s"
    )
    FAILOVER["orders"] = (
        f"{len(order_ids)} orders at {RATE}/s through the gateway (sent again: {dict(burst.resent)}): "
        f"{dict(Counter(statuses.values()))}, "
        f"each authorized once at the bank (orders by authorize calls it received: "
        f"{dict(sorted(asked.items()))}, resends under one key), notified once, "
        f"outboxes drained; services' connections dropped: {dropped}"
    )
    FAILOVER["latency"] = (
        f"place -> final during the failover ({len(latencies)} orders traced whole): "
        f"p50 {percentile(latencies, 0.5):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies):.2f} s; "
        f"of the {len(before)} placed before the first kill: p50 {percentile(before, 0.5):.2f} s, "
        f"p99 {percentile(before, 0.99):.2f} s"
    )
    FAILOVER["readiness"] = "not ready: " + ", ".join(
        f"{name} {readiness.not_ready[name]:.1f} s (longest {readiness.longest[name]:.1f} s)"
        for name in platform.services
    )


def spans_by_order(platform: Platform, burst: Burst) -> dict[str, list[Span]]:
    """The spans of every send of each order, oldest first."""
    by_trace: dict[str, list[Span]] = {}
    for span in platform.spans():
        by_trace.setdefault(span.trace_id, []).append(span)
    return {
        order_id: sorted((s for t in traces for s in by_trace.get(t, [])), key=lambda s: s.start_ns)
        for order_id, (traces, _) in burst.placed.items()
    }


def traced_finals(platform: Platform, burst: Burst) -> dict[str, float]:
    """Seconds from the gateway receiving each order to orders applying its payment's outcome
    (the end of orders' last consumer span in the order's trace), for the orders traced whole."""
    finals = {}
    for order_id, spans in spans_by_order(platform, burst).items():
        received = [s.start_ns for s in spans if s.service == "gateway" and s.kind == SERVER]
        applied = [s.end_ns for s in spans if s.service == "orders" and s.kind == CONSUMER]
        if received and applied:
            finals[order_id] = (max(applied) - min(received)) / 1e9
    return finals


def test_every_node_is_back_in_the_cluster_with_every_queue_at_three_replicas(
    platform: Platform, cluster: list[str]
) -> None:
    wait_clustered(platform, cluster, cluster[0])
    queues = lantern_queues(platform, cluster[0])
    quorum = {name: q for name, q in queues.items() if q["type"] == "quorum"}
    assert quorum and {name: len(q["members"]) for name, q in quorum.items()} == dict.fromkeys(quorum, NODES)
