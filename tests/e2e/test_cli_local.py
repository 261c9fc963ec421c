"""`lantern --local`, for real: the platform as `make run` starts it (processes, the trace sink
and its query API, a RabbitMQ vhost of its own), and every command against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import aio_pika
import httpx
import pytest

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import DEFAULT_PORTS, Stack, development_secret
from lantern_cli.__main__ import main as lantern
from lantern_runtime.jaeger_query import JaegerQuery, TraceNotFound
from lantern_runtime.trace_contract import check_trace, order_flow_chain
from lantern_runtime.trace_formats import spans_from_jaeger_json

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

ORDER = {"items": [{"sku": "lamp", "quantity": 1, "unit_price": "9.90"}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("cli-stack")
    with fresh_vhost("lantern-cli") as amqp_url:
        platform = Stack(
            workdir,
            ports={service: free_port() for service in DEFAULT_PORTS},
            amqp_url=amqp_url,
            sink_port=free_port(),
            extra_env={"OTEL_BSP_SCHEDULE_DELAY": "100"},
            # As `make run` keeps it, so `lantern token` finds it where devstack leaves it.
            jwt_secret=development_secret(workdir / "jwt-secret"),
        )
        with platform.running(timeout=60):
            yield platform


def local_env(stack: Stack) -> dict[str, str]:
    ports = ",".join(f"{name}={port}" for name, port in {**stack.ports, "sink": stack.sink_port}.items())
    return {"LANTERN_LOCAL_PORTS": ports, "AMQP_URL": stack.amqp_url, "LANTERN_DEV_DIR": str(stack.workdir)}


@pytest.fixture
def local(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name, value in local_env(stack).items():
        monkeypatch.setenv(name, value)
    for name in (
        "GATEWAY_JWT_SECRET",
        "GATEWAY_JWKS_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "LANTERN_SMOKE_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return stack


def place_confirmed_order(stack: Stack) -> tuple[str, str]:
    """(order id, trace id) of an order that is confirmed and whose trace is whole in the sink."""
    with httpx.Client(base_url=stack.url("gateway"), headers=stack.auth_headers(), timeout=10) as gateway:
        response = gateway.post("/api/orders", json=ORDER, headers={"Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 202, response.text
        order_id, trace_id = response.json()["order_id"], response.headers["traceresponse"].split("-")[1]
        deadline = time.monotonic() + 20
        with JaegerQuery(f"http://127.0.0.1:{stack.sink_port}") as query:
            while True:
                try:
                    spans = spans_from_jaeger_json(query.trace(trace_id))
                except TraceNotFound:
                    spans = []
                if not check_trace(spans, order_flow_chain("authorized")) or time.monotonic() > deadline:
                    return order_id, trace_id
                time.sleep(0.2)


@pytest.fixture(scope="module")
def order(stack: Stack) -> tuple[str, str]:
    return place_confirmed_order(stack)


def test_status_shows_every_service_ready_and_every_queue_empty(
    local: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lantern(["--local", "status"]) == 0
    out = capsys.readouterr().out
    for service in DEFAULT_PORTS:
        assert any(
            line.startswith(service) and "1/1" in line and " ok" in line for line in out.splitlines()
        ), out
    assert "traces" in out
    for queue in ("payments.order-events", "orders.payment-results", "notifier.order-outcomes"):
        [row] = [line.split() for line in out.splitlines() if line.startswith(queue + " ")]
        assert row[1:] == ["0", "0", "0", "ok"], out


def test_a_minted_token_is_accepted_by_the_gateway(local: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert lantern(["--local", "token", "--scopes", "orders:read", "--subject", "ops"]) == 0
    token = capsys.readouterr().out.strip()
    gateway = local.url("gateway")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{gateway}/api/orders/{uuid.uuid4()}", headers=headers).status_code == 404
    # Only the scopes asked for: this token may read but not place orders.
    assert httpx.post(f"{gateway}/api/orders", json=ORDER, headers=headers).status_code == 403


def test_trace_by_trace_id_draws_the_whole_flow_as_a_waterfall(
    local: Stack, order: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, trace_id = order
    assert lantern(["--local", "trace", trace_id]) == 0
    out = capsys.readouterr().out
    header = re.match(rf"trace {trace_id}  (\d+) spans  5 services", out)
    assert header, out
    assert "\x1b[" not in out  # not a tty: no colours
    rows = [line for line in out.splitlines() if " ms  |" in line]
    # The flow's eleven spans and, among them, each service's SQL.
    assert len(rows) == int(header[1]) > 11
    assert sum(" publish lantern." in row or " process lantern." in row for row in rows) == 6
    assert any("orders  INSERT " in row for row in rows)
    assert "bank  POST /authorizations [server]" in out
    assert "ERROR" not in out


def test_trace_json_is_jaegers_format_and_satisfies_the_contract(
    local: Stack, order: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, trace_id = order
    assert lantern(["--local", "trace", trace_id, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["data"][0]["traceID"] == trace_id
    assert check_trace(spans_from_jaeger_json(document), order_flow_chain("authorized")) == []


def test_trace_by_order_id_finds_the_orders_trace(
    local: Stack, order: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    order_id, trace_id = order
    assert lantern(["--local", "trace", order_id]) == 0
    assert capsys.readouterr().out.startswith(f"trace {trace_id}  ")


def test_an_unknown_trace_or_order_is_one_line_and_exit_2(
    local: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lantern(["--local", "trace", "0" * 31 + "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no trace {'0' * 31}1" in err
    assert lantern(["--local", "trace", "no-such-order"]) == 2
    assert "neither a trace id" in capsys.readouterr().err


def test_an_unreachable_trace_query_api_is_one_line_and_exit_2(
    local: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert lantern(["--local", "--jaeger", nowhere, "trace", "--last", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the trace query API at {nowhere} is unreachable" in err


def test_smoke_passes_against_the_local_stack(local: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert lantern(["--local", "smoke", "--timeout", "30"]) == 0
    assert "OK: the order is confirmed and its trace satisfies the contract" in capsys.readouterr().out


def test_dead_letters_are_listed_counted_by_status_and_replayed(
    local: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    message_id = f"poison-{uuid.uuid4().hex[:8]}"

    async def publish_poison() -> None:
        connection = await aio_pika.connect(local.amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("lantern.events")
            await exchange.publish(aio_pika.Message(b"not json", message_id=message_id), "order.created")

    import asyncio

    asyncio.run(publish_poison())
    deadline = time.monotonic() + 15
    while True:
        assert lantern(["--local", "dead-letters", "list"]) == 0
        out = capsys.readouterr().out
        if message_id in out or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert f"payments.order-events\t{message_id}" in out and "1 dead letter(s)" in out

    assert lantern(["--local", "status"]) == 1
    [row] = [
        line.split()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("payments.order-events ")
    ]
    assert row[3:] == ["1", "UNHEALTHY"]

    assert lantern(["--local", "dead-letters", "replay", "--queue", "payments.order-events"]) == 0
    assert capsys.readouterr().out.strip() == "replayed 1 message(s) onto payments.order-events"


def test_an_unreachable_broker_is_one_line_and_exit_2(
    local: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AMQP_URL", f"amqp://guest:secret@127.0.0.1:{free_port()}/")
    assert lantern(["--local", "dead-letters", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is unreachable" in err and "secret" not in err


def test_the_console_script_and_make_traces_run_as_installed(stack: Stack, order: tuple[str, str]) -> None:
    env = {**os.environ, **local_env(stack)}
    script = os.path.join(os.path.dirname(sys.executable), "lantern")
    status = subprocess.run(
        [script, "--local", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode in (0, 1), status.stderr  # 1 while the replayed poison is dead again
    assert "gateway" in status.stdout and "payments.order-events" in status.stdout
    traces = subprocess.run(
        [sys.executable, "-m", "devstack", "traces", "--last", "50"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert traces.returncode == 0, traces.stderr
    assert f"trace {order[1]}" in traces.stdout
