"""7. Started before their broker, database, Redis and trace endpoint: every service stays up,
live but not ready, and becomes ready by itself, in the same process, once they appear.
8. A dependency that never answers ends start-up after STARTUP_TIMEOUT with one line saying why,
and a non-zero exit; a stop signal while starting ends it at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import ExitStack, suppress
from typing import TYPE_CHECKING

import httpx
import pytest

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import DEFAULT_PORTS, SERVICES, Stack
from devstack.tracesink import traces_by_id
from lantern_runtime.service import STARTUP_FAILURE
from lantern_runtime.trace_contract import check_trace, order_flow_chain, render_tree
from tests.conftest import fresh_database
from tests.faults.conftest import FAST_RECOVERY, order_body

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.redis]

WITH_DATABASE = ("orders", "payments", "notifier")
WITH_BROKER = ("orders", "payments", "notifier")


class Forwarder:
    """Loopback ports that forward to real servers once started; until then nothing listens on
    them, as when a service starts before its broker or database."""

    def __init__(self, targets: dict[str, tuple[str, int]]) -> None:
        self.targets = targets
        self.ports = {name: free_port() for name in targets}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="forwarder", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        for name, target in self.targets.items():
            serving = asyncio.start_server(
                lambda reader, writer, target=target: self._forward(reader, writer, target),
                "127.0.0.1",
                self.ports[name],
            )
            self._servers.append(asyncio.run_coroutine_threadsafe(serving, self._loop).result(10))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            for server in self._servers:
                server.close()
            for connection in self._connections:
                connection.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        self._connections |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        self._connections -= {writer, upstream_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def log_messages(stack: Stack, service: str) -> list[str]:
    lines = stack.tail(service, 100_000).splitlines()
    return [json.loads(line)["message"] for line in lines if line.startswith("{")]


@pytest.fixture
def unreachable_platform(tmp_path: Path) -> Iterator[tuple[Stack, Forwarder]]:
    """The platform started with RabbitMQ, PostgreSQL, Redis and the trace sink behind a
    forwarder that is not listening yet; each service with a database has a fresh one, migrated
    beforehand (as an init container would, before the service's container starts)."""
    with ExitStack() as cleanup:
        sink_port = free_port()
        forwarder = Forwarder(
            {
                "amqp": ("127.0.0.1", 5672),
                "postgres": ("127.0.0.1", 5432),
                "redis": ("127.0.0.1", 6379),
                "otlp": ("127.0.0.1", sink_port),
            }
        )
        cleanup.callback(forwarder.stop)
        vhost = cleanup.enter_context(fresh_vhost()).rsplit("/", 1)[1]
        databases = {service: cleanup.enter_context(fresh_database(service)) for service in WITH_DATABASE}
        via = forwarder.ports
        service_env: dict[str, dict[str, str]] = {
            service: {"DATABASE_URL": url.replace(":5432/", f":{via['postgres']}/")}
            for service, url in databases.items()
        }
        service_env["gateway"] = {"REDIS_URL": f"redis://127.0.0.1:{via['redis']}/0"}
        stack = Stack(
            tmp_path / "platform",
            ports={service: free_port() for service in DEFAULT_PORTS},
            amqp_url=f"amqp://guest:guest@127.0.0.1:{via['amqp']}/{vhost}",
            # The topology step ran beforehand, straight to the broker, as an init container would.
            topology_url=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            otlp_endpoint=f"http://127.0.0.1:{via['otlp']}",
            extra_env={**FAST_RECOVERY, "OTEL_BSP_SCHEDULE_DELAY": "100"},
            service_env=service_env,
            migrate=False,
        )
        cleanup.callback(stack.stop)
        sink = [sys.executable, "-m", "devstack.tracesink", "--port", str(sink_port)]
        stack.start_process("tracesink", [*sink, "--file", str(stack.spans_file)], dict(os.environ))
        stack.start()
        yield stack, forwarder


def test_services_started_before_their_dependencies_wait_and_then_become_ready_by_themselves(
    unreachable_platform: tuple[Stack, Forwarder],
) -> None:
    stack, forwarder = unreachable_platform
    time.sleep(15)
    pids = {service: stack.processes[service].pid for service in SERVICES}
    for service in SERVICES:
        assert stack.processes[service].poll() is None, f"{service} exited:\n{stack.tail(service)}"
        assert status(f"{stack.url(service)}/healthz") == 200, service
    for service in WITH_BROKER:
        answer = httpx.get(f"{stack.url(service)}/readyz", timeout=2)
        assert answer.status_code == 503, service
        assert {"starting", "broker", "database"} <= set(answer.json()["failing"]), (service, answer.json())
        waits = [m for m in log_messages(stack, service) if m.startswith("waiting for broker at amqp://")]
        assert waits and "nothing listens on 127.0.0.1:" in waits[-1], stack.tail(service)
    # The gateway and bank need none of them to answer: the rate limiter falls back to memory.
    assert status(f"{stack.url('gateway')}/readyz") == 200
    assert status(f"{stack.url('bank')}/readyz") == 200

    forwarder.start()
    stack.wait_ready(timeout=60)
    assert {service: stack.processes[service].pid for service in SERVICES} == pids
    assert all(stack.processes[service].poll() is None for service in SERVICES)

    with httpx.Client(base_url=stack.url("gateway"), timeout=10, headers=stack.auth_headers()) as gateway:
        placed = gateway.post(
            "/api/orders", json=order_body(), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]
        deadline = time.monotonic() + 30
        while (order := gateway.get(f"/api/orders/{order_id}").json())["status"] == "pending":
            assert time.monotonic() < deadline, order
            time.sleep(0.1)
        assert order["status"] == "confirmed", order
    trace_id = placed.headers["traceresponse"].split("-")[1]
    deadline = time.monotonic() + 15
    while problems := check_trace(
        spans := traces_by_id(stack.spans_file).get(trace_id, []), order_flow_chain("authorized")
    ):
        assert time.monotonic() < deadline, (problems, render_tree(spans))
        time.sleep(0.2)


def lone_service(tmp_path: Path, service: str, amqp_url: str, **env: str) -> Stack:
    """One service started alone; its trace endpoint is a port where nothing listens, too."""
    stack = Stack(
        tmp_path / service,
        ports={name: free_port() for name in DEFAULT_PORTS},
        amqp_url=amqp_url,
        otlp_endpoint=f"http://127.0.0.1:{free_port()}",
        service_env={service: env},
    )
    stack.log_dir.mkdir(parents=True)
    stack.start_service(service)
    return stack


@pytest.mark.parametrize(
    ("amqp_url", "reason"),
    [
        ("amqp://guest:guest@127.0.0.1:{port}/", "nothing listens on 127.0.0.1:{port} (connection refused)"),
        ("amqp://guest:wrong@127.0.0.1:5672/", "RabbitMQ refused the credentials for user 'guest'"),
        ("amqp://guest:guest@rabbbitmq:5672/", "host 'rabbbitmq' does not resolve"),
    ],
    ids=["nothing-listening", "wrong-credentials", "unresolvable-host"],
)
def test_a_broker_that_never_answers_ends_start_up_after_the_bound_with_one_clear_line(
    tmp_path: Path, amqp_url: str, reason: str
) -> None:
    port = free_port()
    stack = lone_service(tmp_path, "notifier", amqp_url.format(port=port), STARTUP_TIMEOUT="4")
    try:
        started = time.monotonic()
        returncode = stack.processes["notifier"].wait(30)
        assert returncode == STARTUP_FAILURE != 0
        assert time.monotonic() - started < 20
        messages = log_messages(stack, "notifier")
        redacted = amqp_url.format(port=port).replace(":guest@", ":***@").replace(":wrong@", ":***@")
        gave_up = (
            f"start-up gave up after 4 s (STARTUP_TIMEOUT): broker at {redacted}: {reason.format(port=port)}"
        )
        assert (
            [m for m in messages if m.startswith("start-up gave up")]
            == [m for m in messages if m.startswith(gave_up)]
            != []
        ), messages
        waits = [m for m in messages if m.startswith(f"waiting for broker at {redacted}: ")]
        assert waits and all(reason.format(port=port) in m for m in waits), waits
    finally:
        stack.stop()


def test_a_stop_signal_while_starting_ends_the_service_at_once_and_cleanly(tmp_path: Path) -> None:
    stack = lone_service(tmp_path, "payments", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    try:
        deadline = time.monotonic() + 20
        while status(f"{stack.url('payments')}/readyz") != 503:
            assert time.monotonic() < deadline, stack.tail("payments")
            time.sleep(0.1)
        started = time.monotonic()
        assert stack.stop_service("payments", signal.SIGTERM, timeout=15) == 0
        # Its trace endpoint does not answer either: the telemetry flush gives up after 5 s.
        assert time.monotonic() - started < 8
        messages = log_messages(stack, "payments")
        assert "stopping before start-up finished; start-up cancelled" in messages
        assert "Application shutdown complete." in messages
        assert not [m for m in messages if "Traceback" in m or m.startswith("start-up gave up")]
    finally:
        stack.stop()
