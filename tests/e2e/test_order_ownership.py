"""Who may do what with an order, against the real gateway and the real orders as processes:
each caller (a token's subject) sees, places and de-duplicates only its own orders, and the
subject the gateway signs for orders cannot be bent, duplicated or replayed elsewhere or later.

Between the gateway and orders sits a recorder: it passes every request on unchanged and keeps
what the gateway sent, as an attacker inside the cluster would capture it."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from devstack.loopback import free_port, serving
from devstack.rabbitmq import fresh_vhost
from devstack.stack import COMPONENTS, Stack
from lantern_runtime.subject import SIGNATURE_HEADER, SUBJECT_HEADER

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

ALICE, BOB = "alice@example.com", "bob@example.com"
LAMP = {"items": [{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}]}
SOFA = {"items": [{"sku": "sofa", "quantity": 1, "unit_price": "1500.00"}]}
# orders' signature lifetime here: short, so expiry is seen without a long wait.
MAX_AGE = 3.0


def recorder(target: str) -> tuple[FastAPI, list[dict[str, Any]]]:
    """Relays each request to `target` as it came; `seen` keeps method, path and headers."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def relay(request: Request) -> Response:
        raw_path = request.scope["raw_path"].decode("latin-1")
        headers = [(k, v) for k, v in request.headers.raw if k not in (b"host", b"content-length")]
        seen.append({"method": request.method, "path": raw_path, "headers": headers})
        async with httpx.AsyncClient(base_url=target, timeout=10) as client:
            answer = await client.request(
                request.method, raw_path, content=await request.body(), headers=headers
            )
        relayed = {k: v for k, v in answer.headers.items() if k in ("content-type", "location")}
        return Response(answer.content, answer.status_code, headers=relayed)

    return app, seen


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[dict[str, Any]]]]:
    ports = {"gateway": free_port(), "orders": free_port()}
    app, seen = recorder(f"http://127.0.0.1:{ports['orders']}")
    with fresh_vhost() as amqp_url, serving(app) as recorder_url:
        stack = Stack(
            tmp_path_factory.mktemp("ownership"),
            components={name: COMPONENTS[name] for name in ("gateway", "orders")},
            ports=ports,
            amqp_url=amqp_url,
            sink_port=free_port(),
            service_env={
                "gateway": {"ORDERS_URL": recorder_url},
                "orders": {"GATEWAY_SUBJECT_MAX_AGE": str(MAX_AGE)},
            },
        )
        with stack.running(timeout=60):
            yield stack, seen


@pytest.fixture
def stack(platform: tuple[Stack, list[dict[str, Any]]]) -> Stack:
    return platform[0]


@pytest.fixture
def captured(platform: tuple[Stack, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return platform[1]


def as_caller(stack: Stack, subject: str) -> httpx.Client:
    headers = stack.auth_headers(subject=subject)
    return httpx.Client(base_url=stack.url("gateway"), timeout=10, headers=headers)


def place(client: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return client.post("/api/orders", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def test_another_callers_order_is_404_exactly_as_a_missing_one(stack: Stack) -> None:
    with as_caller(stack, ALICE) as alice, as_caller(stack, BOB) as bob:
        placed = place(alice, LAMP)
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]
        mine = alice.get(f"/api/orders/{order_id}")
        theirs = bob.get(f"/api/orders/{order_id}")
        missing = bob.get(f"/api/orders/{uuid.uuid4()}")
    assert mine.status_code == 200 and mine.json()["customer_id"] == ALICE
    assert theirs.status_code == missing.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    assert set(theirs.json()) == set(missing.json())
    assert ALICE not in theirs.text


def test_a_key_another_caller_used_is_a_new_order_of_ones_own_not_a_409(stack: Stack) -> None:
    key = f"order-{int(time.time())}"  # the guessable kind
    with as_caller(stack, ALICE) as alice, as_caller(stack, BOB) as bob:
        hers = place(alice, LAMP, key)
        his = place(bob, SOFA, key)
        assert (hers.status_code, his.status_code) == (202, 202), his.text
        her_id, his_id = hers.json()["order_id"], his.json()["order_id"]
        assert his_id != her_id
        assert her_id not in his.text and his.headers["location"] == f"/api/orders/{his_id}"
        mine = bob.get(f"/api/orders/{his_id}").json()
        assert (mine["customer_id"], mine["total"]) == (BOB, "1500.00")
        # Each retry still finds its own caller's order; a changed body conflicts only with one's own.
        assert place(alice, LAMP, key).json()["order_id"] == her_id
        assert place(bob, SOFA, key).json()["order_id"] == his_id
        conflict = place(bob, LAMP, key)
    assert conflict.status_code == 409
    assert his_id in conflict.json()["detail"] and her_id not in conflict.text


def test_an_order_in_another_callers_name_is_403_naming_both(stack: Stack) -> None:
    with as_caller(stack, BOB) as bob:
        response = place(bob, {**LAMP, "customer_id": ALICE})
        own = place(bob, {**LAMP, "customer_id": BOB})
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert repr(ALICE) in response.json()["detail"] and repr(BOB) in response.json()["detail"]
    assert own.status_code == 202


def test_orders_without_a_subject_is_401(stack: Stack) -> None:
    orders = stack.url("orders")
    bare = httpx.post(f"{orders}/api/orders", json=LAMP, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert bare.status_code == 401, bare.text
    assert bare.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{orders}/api/orders/{uuid.uuid4()}").status_code == 401
    unsigned = httpx.get(f"{orders}/api/orders/{uuid.uuid4()}", headers={SUBJECT_HEADER: ALICE})
    assert unsigned.status_code == 401 and SIGNATURE_HEADER in unsigned.json()["detail"]


def capture_post(
    stack: Stack, captured: list[dict[str, Any]], subject: str
) -> tuple[str, list[tuple[bytes, bytes]]]:
    """`subject` places an order through the gateway; returns its id and the headers orders got."""
    captured.clear()
    key = str(uuid.uuid4())
    with as_caller(stack, subject) as client:
        placed = place(client, LAMP, key)
    assert placed.status_code == 202, placed.text
    [request] = [r for r in captured if r["method"] == "POST"]
    assert request["path"] == "/api/orders"
    wanted = {
        b"idempotency-key",
        b"content-type",
        SUBJECT_HEADER.lower().encode(),
        SIGNATURE_HEADER.lower().encode(),
    }
    return placed.json()["order_id"], [(k, v) for k, v in request["headers"] if k in wanted]


def test_a_captured_subject_replayed_to_another_path_or_method_is_401(
    stack: Stack, captured: list[dict[str, Any]]
) -> None:
    order_id, headers = capture_post(stack, captured, ALICE)
    orders = stack.url("orders")
    # Within its lifetime, on the request it was made for, it still works: the refusals below
    # come from the path and the method, nothing else.
    again = httpx.post(f"{orders}/api/orders", json=LAMP, headers=headers)
    assert again.status_code == 202 and again.json()["order_id"] == order_id
    elsewhere = httpx.get(f"{orders}/api/orders/{order_id}", headers=headers)
    assert elsewhere.status_code == 401, elsewhere.text
    assert "does not match" in elsewhere.json()["detail"]
    other_method = httpx.request("PUT", f"{orders}/api/orders", json=LAMP, headers=headers)
    assert other_method.status_code == 401


def test_a_captured_subject_replayed_after_it_expires_is_401(
    stack: Stack, captured: list[dict[str, Any]]
) -> None:
    _, headers = capture_post(stack, captured, ALICE)
    time.sleep(MAX_AGE + 1.5)
    late = httpx.post(f"{stack.url('orders')}/api/orders", json=LAMP, headers=headers)
    assert late.status_code == 401, late.text
    assert f"older than {MAX_AGE:g}s" in late.json()["detail"]


@pytest.mark.parametrize("header", [SUBJECT_HEADER, SIGNATURE_HEADER])
def test_a_duplicate_subject_header_is_401_naming_it(
    stack: Stack, captured: list[dict[str, Any]], header: str
) -> None:
    _, headers = capture_post(stack, captured, ALICE)
    name = header.lower().encode()
    extra = BOB.encode() if header == SUBJECT_HEADER else dict(headers)[name]
    doubled = httpx.post(f"{stack.url('orders')}/api/orders", json=LAMP, headers=[*headers, (name, extra)])
    assert doubled.status_code == 401, doubled.text
    assert f"{header} was sent 2 times" in doubled.json()["detail"]


def test_a_client_cannot_send_its_own_subject_through_the_gateway(
    stack: Stack, captured: list[dict[str, Any]]
) -> None:
    captured.clear()
    forged = {SUBJECT_HEADER: ALICE, SIGNATURE_HEADER: f"t={int(time.time())},v2={'0' * 64}"}
    with as_caller(stack, BOB) as bob:
        placed = bob.post("/api/orders", json=LAMP, headers={"Idempotency-Key": str(uuid.uuid4()), **forged})
        assert placed.status_code == 202, placed.text
        assert bob.get(placed.headers["location"]).json()["customer_id"] == BOB
    [request] = [r for r in captured if r["method"] == "POST"]
    subjects = [v for k, v in request["headers"] if k == SUBJECT_HEADER.lower().encode()]
    assert subjects == [BOB.encode()]
