"""The whole platform as real processes, the way `make run` starts it, exporting spans over
real OTLP/HTTP to a sink this test runs: orders end where they should, once, in one trace."""

from __future__ import annotations

import time
import uuid
from importlib.metadata import version
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import DEFAULT_PORTS, Stack
from devstack.tracesink import traces_by_id
from lantern_runtime.trace_contract import check_trace, order_flow_chain, render_tree

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

# No customer_id: the order is the caller's (the token's subject, test-client).
SMALL_ORDER = {
    "items": [{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}],
}
SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"
LARGE_ORDER = {
    "items": [{"sku": "sofa", "quantity": 1, "unit_price": "1500.00"}],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_vhost() as amqp_url:
        platform = Stack(
            tmp_path_factory.mktemp("platform"),
            ports={service: free_port() for service in DEFAULT_PORTS},
            amqp_url=amqp_url,
            sink_port=free_port(),
            extra_env={"OTEL_BSP_SCHEDULE_DELAY": "100"},
        )
        with platform.running(timeout=60):
            yield platform


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("gateway"), timeout=10, headers=stack.auth_headers()) as client:
        yield client


def place(gateway: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    response = gateway.post("/api/orders", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})
    assert response.status_code == 202, response.text
    return response


def final_status(gateway: httpx.Client, order_id: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = str(gateway.get(f"/api/orders/{order_id}").json()["status"])
        if status != "pending" or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def trace_id_of(response: httpx.Response) -> str:
    version, trace_id, _span_id, _flags = response.headers["traceresponse"].split("-")
    assert version == "00"
    return trace_id


def settled_trace_problems(spans_file: Path, trace_id: str, outcome: str) -> tuple[list[str], str]:
    """The contract's verdict once the trace is whole, or its last verdict after a wait."""
    chain = order_flow_chain(outcome)
    deadline = time.monotonic() + 15
    while True:
        spans = traces_by_id(spans_file).get(trace_id, [])
        problems = check_trace(spans, chain)
        if not problems or time.monotonic() > deadline:
            return problems, render_tree(spans)
        time.sleep(0.2)


def test_an_approved_order_is_confirmed_in_one_connected_trace(stack: Stack, gateway: httpx.Client) -> None:
    response = place(gateway, SMALL_ORDER)
    order_id = response.json()["order_id"]
    assert final_status(gateway, order_id) == "confirmed"
    problems, tree = settled_trace_problems(stack.spans_file, trace_id_of(response), "authorized")
    assert problems == [], tree
    # orders trusted the subject because the gateway signed it.
    spans = traces_by_id(stack.spans_file)[trace_id_of(response)]
    [orders_server] = [s for s in spans if s.service == "orders" and s.kind == "server"]
    assert orders_server.attributes.get("enduser.id") == "test-client"
    assert orders_server.attributes.get("http.route") == "/api/orders"
    assert orders_server.attributes.get("http.response.status_code") == 202


def test_one_orders_trace_is_made_by_the_stock_sdk_and_instrumentations_on_current_conventions(
    stack: Stack, gateway: httpx.Client
) -> None:
    response = place(gateway, SMALL_ORDER)
    assert final_status(gateway, response.json()["order_id"]) == "confirmed"
    problems, tree = settled_trace_problems(stack.spans_file, trace_id_of(response), "authorized")
    assert problems == [], tree
    spans = traces_by_id(stack.spans_file)[trace_id_of(response)]
    scopes = {(s.service, s.kind): set() for s in spans}
    for s in spans:
        scopes[(s.service, s.kind)].add(s.scope)
    for service in ("gateway", "orders", "bank"):
        assert scopes[(service, "server")] == {"opentelemetry.instrumentation.fastapi"}
    assert scopes[("gateway", "client")] >= {"opentelemetry.instrumentation.httpx"}
    assert scopes[("payments", "client")] >= {"opentelemetry.instrumentation.httpx"}
    # Each service's SQL, as spans of the SQLAlchemy instrumentation, in the order's trace.
    for service in ("orders", "payments"):
        sql = [
            s for s in spans if s.service == service and s.scope == "opentelemetry.instrumentation.sqlalchemy"
        ]
        assert sql, f"no database spans from {service}:\n{tree}"
        assert all(
            s.kind == "client" and s.attributes.get("db.system.name", s.attributes.get("db.system"))
            for s in sql
        )
    messaging = [s for s in spans if s.kind in ("producer", "consumer")]
    assert {s.attributes["messaging.operation.type"] for s in messaging} == {"send", "process"}
    assert not any("messaging.operation" in s.attributes for s in messaging)
    created = next(s for s in messaging if s.kind == "producer" and s.service == "orders")
    assert created.name == "publish lantern.events:order.created"
    assert created.attributes["messaging.operation.name"] == "publish"
    assert created.attributes["server.port"] == urlsplit(stack.amqp_url).port
    consumed = next(s for s in messaging if s.kind == "consumer" and s.service == "payments")
    assert consumed.name == "process lantern.events:order.created:payments.order-events"
    assert isinstance(consumed.attributes["messaging.rabbitmq.message.delivery_tag"], int)
    for s in spans:
        assert s.resource.get("telemetry.sdk.name") == "opentelemetry", s
        assert s.resource.get("service.namespace") == "lantern"
        assert s.resource.get("service.version") == version("lantern")
        assert s.resource.get("deployment.environment.name") == "development"


def test_an_order_over_the_bank_limit_is_cancelled_in_one_connected_trace(
    stack: Stack, gateway: httpx.Client
) -> None:
    response = place(gateway, LARGE_ORDER)
    order_id = response.json()["order_id"]
    assert final_status(gateway, order_id) == "cancelled"
    assert "exceeds the limit" in gateway.get(f"/api/orders/{order_id}").json()["status_reason"]
    problems, tree = settled_trace_problems(stack.spans_file, trace_id_of(response), "declined")
    assert problems == [], tree


def test_a_duplicated_key_yields_one_order_one_authorization_and_one_notification(
    stack: Stack, gateway: httpx.Client
) -> None:
    key = str(uuid.uuid4())
    order_ids = {place(gateway, SMALL_ORDER, key).json()["order_id"] for _ in range(3)}
    assert len(order_ids) == 1
    [order_id] = order_ids
    assert final_status(gateway, order_id) == "confirmed"
    time.sleep(1.0)  # room for any duplicate to arrive, were one sent
    bank = httpx.get(f"{stack.url('bank')}/authorizations", params={"order_id": order_id})
    notes = httpx.get(f"{stack.url('notifier')}/notifications", params={"order_id": order_id})
    assert [a["status"] for a in bank.json()] == ["approved"]
    assert [n["kind"] for n in notes.json()] == ["order.confirmed"]


def test_every_service_reports_ready_and_the_gateway_returns_the_trace_id(
    stack: Stack, gateway: httpx.Client
) -> None:
    for service in DEFAULT_PORTS:
        assert httpx.get(f"{stack.url(service)}/readyz").json() == {"status": "ready"}
    response = place(gateway, SMALL_ORDER)
    assert len(trace_id_of(response)) == 32


def test_every_trace_has_a_cause_and_no_background_sql_makes_one_of_its_own(
    stack: Stack, gateway: httpx.Client
) -> None:
    place(gateway, SMALL_ORDER)
    # Long enough for the relays, the payment deadline and the probes to have run many times.
    time.sleep(3)
    roots = [
        span for spans in traces_by_id(stack.spans_file).values() for span in spans if not span.parent_span_id
    ]
    assert roots
    lone = sorted(
        {f"{s.service}: {s.name} [{s.kind}]" for s in roots if s.kind not in ("server", "producer")}
    )
    assert lone == [], "\n".join(lone)
