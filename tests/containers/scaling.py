"""What more payments replicas buy on this machine: the drain rate of a backlog of orders.

    python -m tests.containers.scaling [--orders 2000] [--replicas 1 2 3] [--json PATH]

The chart's default render on the container tier's machinery (its images, RabbitMQ 4.0 and
PostgreSQL 17 stand-ins, the bank, each payments replica a pod of its own under the Service's
name). For each replica count in turn: that many payments pods are started, ready, and paused
(`docker pause`: subscribed, holding their prefetch, doing nothing); a fresh backlog of
order.created events is published onto the events exchange as orders' relay publishes them (with
orders' own broker user); then the pods are unpaused together and the backlog timed until every
order is authorized (its payment row, written with the outbox row in one transaction) and
payments' outbox is drained. A measurement, not a test: out of `make test`, several minutes.

The limit is the machine: every container of the run shares its cores (nproc), each held to
the CPU its pod template asks (resources.limits), with whatever else runs there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

from order_flow.events import OrderCreated
from order_flow.topology import PAYMENTS_QUEUE
from tests.containers.images import docker
from tests.containers.platform import Platform
from tests.containers.replicas import build_images, default_render, pod_names, start_pod

PAYMENTS = "payments"
CUSTOMER = "scaling-bench"


@dataclass(frozen=True)
class Drain:
    replicas: int
    orders: int
    seconds: float
    # Until the last payment row, and until payments' outbox had published the last result.
    authorized_seconds: float
    # Mid-drain, by container: the payments replicas and what they wait on.
    cpu: dict[str, str]
    # The machine's 1-minute load average as the round began: other work shares the cores.
    load: float

    @property
    def rate(self) -> float:
        return self.orders / self.seconds


def with_host(url: str, host: str) -> str:
    """`url` (a Service name's) pointed at `host`, the container's address seen from here."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    port = hostport.rsplit(":", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}:{port}"))


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def publish_backlog(amqp_url: str, count: int) -> list[str]:
    """`count` order.created events as orders' relay publishes them; returns their order ids."""
    order_ids = [str(uuid.uuid4()) for _ in range(count)]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("lantern.events", ensure=False)

        async def one(order_id: str) -> None:
            event = OrderCreated(order_id=order_id, customer_id=CUSTOMER, total=Decimal("10.00"))
            message = aio_pika.Message(
                event.model_dump_json().encode(),
                message_id=f"{order_id}:{event.event_type}",
                correlation_id=order_id,
                type=event.event_type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, routing_key=event.event_type, mandatory=True)

        for start in range(0, count, 200):
            await asyncio.gather(*(one(order_id) for order_id in order_ids[start : start + 200]))
    return order_ids


def queue_depth(platform: Platform, queue: str) -> int:
    """Ready plus unacknowledged messages of `queue`."""
    out = docker(
        "exec", "--user", "rabbitmq", platform.container("rabbitmq"), "rabbitmqctl", "list_queues",
        "--formatter", "json", "name", "messages_ready", "messages_unacknowledged",
    ).stdout  # fmt: skip
    for row in json.loads(out):
        if row["name"] == queue:
            return int(row["messages_ready"]) + int(row["messages_unacknowledged"])
    raise AssertionError(f"no queue {queue} on the broker")


# Beside the payments replicas, what they wait on: one of these at its limit is the bottleneck.
ALSO_SAMPLED = ("bank-0", "postgres", "rabbitmq")


def cpu_sample(platform: Platform, pods: list[str], into: dict[str, str]) -> None:
    """Each container's CPU as `docker stats` reads it once, mid-drain (100% is one core)."""
    names = {platform.container(pod): pod for pod in [*pods, *ALSO_SAMPLED]}
    out = docker(
        "stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}}", *names, check=False, timeout=60
    ).stdout
    for line in out.splitlines():
        if line.strip():
            name, cpu = line.split()
            into[names[name]] = cpu


async def timed_drain(db_url: str, order_ids: list[str], on_half: threading.Thread) -> tuple[float, float]:
    """Seconds from now until every order has its authorized payment row, and until payments'
    outbox has nothing left unsent as well."""
    began = time.monotonic()
    authorized_at = 0.0
    connection = await asyncpg.connect(db_url)
    try:
        while True:
            done = await connection.fetchval(
                "SELECT count(*) FROM payments WHERE status = 'authorized' AND order_id = ANY($1::text[])",
                order_ids,
            )
            if done >= len(order_ids) // 2 and on_half.ident is None:
                on_half.start()
            if done >= len(order_ids):
                authorized_at = authorized_at or time.monotonic() - began
                unsent = await connection.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                if unsent == 0:
                    return authorized_at, time.monotonic() - began
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


def remove_payments(platform: Platform) -> None:
    pods = [pod for pod in platform.runs if pod.startswith(f"{PAYMENTS}-")]
    names = [platform.container(pod) for pod in pods]
    names += [init for pod in pods for init in platform.inits.pop(pod, [])]
    if names:
        docker("rm", "--force", *names, check=False, timeout=120)
    for pod in pods:
        del platform.runs[pod]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def one_round(platform: Platform, replicas: int, orders: int) -> Drain:
    pods = pod_names(PAYMENTS, replicas)
    for pod in pods:
        start_pod(platform, PAYMENTS, pod)
    platform.wait_ready(pods, timeout=300)
    docker("pause", *(platform.container(pod) for pod in pods))
    try:
        amqp = with_host(
            platform.render.secret_data("rabbitmq-credentials")["orders-url"], platform.ip("rabbitmq")
        )
        order_ids = asyncio.run(publish_backlog(amqp, orders))
        deadline = time.monotonic() + 60
        while queue_depth(platform, PAYMENTS_QUEUE.name) < orders and time.monotonic() < deadline:
            time.sleep(0.5)
        depth = queue_depth(platform, PAYMENTS_QUEUE.name)
        assert depth == orders, f"{PAYMENTS_QUEUE.name} holds {depth} messages, not the backlog's {orders}"
    finally:
        docker("unpause", *(platform.container(pod) for pod in pods))
    load = load_average()
    cpu: dict[str, str] = {}
    sampler = threading.Thread(target=cpu_sample, args=(platform, pods, cpu), daemon=True)
    db = platform.render.secret_data("postgres-credentials")["payments-url"]
    authorized, drained = asyncio.run(
        timed_drain(asyncpg_url(with_host(db, platform.ip("postgres"))), order_ids, sampler)
    )
    sampler.join(timeout=60)
    remove_payments(platform)
    # What payments published for orders, which nothing consumes here: gone before the next round.
    docker(
        "exec", "--user", "rabbitmq", platform.container("rabbitmq"),
        "rabbitmqctl", "purge_queue", "orders.payment-results",
    )  # fmt: skip
    return Drain(replicas, orders, drained, authorized, cpu, load)


def cpu_limit(platform: Platform, name: str) -> str:
    """The CPU limit the render gives Deployment `name`'s container."""
    (container,) = platform.render.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
    return str(container.get("resources", {}).get("limits", {}).get("cpu", "none"))


def table(drains: list[Drain], cores: int, payments_cpu: str, bank_cpu: str) -> str:
    base = drains[0].rate
    lines = [
        f"payments drain of a backlog, on this machine's {cores} cores (the limit: every container",
        "of the run shares them, and whatever else runs here: its load average as each round began);",
        f"each payments replica limited to {payments_cpu} CPU, the one bank to {bank_cpu}, as the chart's",
        "resources.limits; the bank answers after its 50 ms latency (BANK_LATENCY_MS).",
        "",
        f"{'replicas':>8}  {'orders':>6}  {'authorized':>10}  {'drained':>8}  {'orders/s':>8}  "
        f"{'per replica':>11}  {'speed-up':>8}  {'load':>5}  cpu mid-drain (100% = a core)",
    ]
    for d in drains:
        lines.append(
            f"{d.replicas:>8}  {d.orders:>6}  {d.authorized_seconds:>9.1f}s  {d.seconds:>7.1f}s  "
            f"{d.rate:>8.1f}  {d.rate / d.replicas:>11.1f}  {d.rate / base:>7.2f}x  {d.load:>5.1f}  "
            + ", ".join(f"{name} {cpu}" for name, cpu in d.cpu.items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.containers.scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--orders", type=int, default=2000, help="the backlog of each round")
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1, 2, 3], help="payments replicas, a round each"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args(argv)
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode != 0:
        print("no Docker engine answers: the container tier's machinery needs one", file=sys.stderr)
        return 2

    render = default_render()
    image, infra = build_images(render)
    network = f"lantern-scaling-{os.getpid()}"
    docker("network", "create", network)
    with tempfile.TemporaryDirectory(prefix="lantern-scaling-") as files:
        platform = Platform(render, network, Path(files), infra, [])
        try:
            platform.start_trace_receiver(image)
            for stand_in in ("postgres", "rabbitmq"):
                platform.start_stand_in(stand_in)
            start_pod(platform, "bank", "bank-0")
            platform.wait_ready(["bank-0"], timeout=300)
            drains = []
            for replicas in arguments.replicas:
                drain = one_round(platform, replicas, arguments.orders)
                print(
                    f"{replicas} payments replicas: {drain.orders} orders drained in {drain.seconds:.1f} s",
                    flush=True,
                )
                drains.append(drain)
            print()
            print(
                table(
                    drains,
                    os.cpu_count() or 0,
                    cpu_limit(platform, PAYMENTS),
                    cpu_limit(platform, "bank"),
                )
            )
        finally:
            platform.remove()
    if arguments.json:
        figures = [{**asdict(d), "orders_per_second": round(d.rate, 2)} for d in drains]
        arguments.json.write_text(json.dumps({"cores": os.cpu_count(), "drains": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
