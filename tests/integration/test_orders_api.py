"""orders over HTTP against real engines: SQLite and PostgreSQL, with the real broker. Requests
carry a subject signed as the gateway signs it (customer c-1 unless a test says otherwise)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lantern_runtime.subject import SignedSubject
from lantern_runtime.telemetry import Telemetry
from order_flow.topology import PAYMENTS_QUEUE
from orders.bootstrap import create_app
from orders.settings import OrdersSettings
from tests.integration.conftest import drain, migrate, queue_depth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.rabbitmq]

SUBJECT_SECRET = "k" * 48

ORDER = {
    "customer_id": "c-1",
    "items": [
        {"sku": "lamp", "quantity": 2, "unit_price": "19.90"},
        {"sku": "bulb", "quantity": 3, "unit_price": "0.10"},
    ],
}


@pytest.fixture
async def client(database_url: str, amqp_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await migrate(database_url, "orders")
    settings = OrdersSettings(
        database_url=database_url,
        amqp_url=amqp_url,
        outbox_poll_seconds=0.1,
        gateway_subject_secret=SUBJECT_SECRET,
    )
    app, readiness = create_app(settings, Telemetry("orders"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://orders", auth=as_customer("c-1")
        ) as client,
    ):
        # The lifespan yields at once and connects in the background; tables exist once ready.
        for _ in range(600):
            if not await readiness.failing():
                break
            await asyncio.sleep(0.05)
        assert await readiness.failing() == []
        yield client


def as_customer(subject: str) -> SignedSubject:
    return SignedSubject(SUBJECT_SECRET, subject, service="orders")


async def place(
    client: httpx.AsyncClient, body: Any, key: str = "key-1", *, customer: str | None = None
) -> httpx.Response:
    auth = as_customer(customer) if customer else httpx.USE_CLIENT_DEFAULT
    return await client.post("/api/orders", json=body, headers={"Idempotency-Key": key}, auth=auth)


async def test_an_accepted_order_is_pending_with_a_location_and_its_decimal_total(
    client: httpx.AsyncClient,
) -> None:
    response = await place(client, ORDER)
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    assert response.json() == {"order_id": order_id, "status": "pending"}
    assert response.headers["location"] == f"/api/orders/{order_id}"

    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json()["status"] == "pending"
    assert fetched.json()["total"] == "40.10"


async def test_an_accepted_order_publishes_exactly_one_order_created(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    order_id = (await place(client, ORDER)).json()["order_id"]
    [message] = await drain(amqp_url, PAYMENTS_QUEUE.name, expect=1)
    assert message.message_id == f"{order_id}:order.created"
    assert message.type == "order.created"
    assert message.delivery_mode == 2  # persistent
    assert message.content_type == "application/json"
    assert json.loads(message.body) == {
        "order_id": order_id,
        "customer_id": "c-1",
        "total": "40.10",
    }


async def test_an_unknown_order_is_404_with_a_json_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/orders/no-such-order")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "no-such-order" in response.json()["detail"]


async def test_a_repeated_post_returns_the_same_order_and_publishes_nothing_new(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    first = await place(client, ORDER, key="same")
    again = await asyncio.gather(*(place(client, ORDER, key="same") for _ in range(5)))
    assert {r.json()["order_id"] for r in again} == {first.json()["order_id"]}
    assert len(await drain(amqp_url, PAYMENTS_QUEUE.name, expect=2, timeout=1.5)) == 1


async def test_the_same_key_with_a_different_body_is_409_naming_the_key(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    first = await place(client, ORDER, key="shared")
    response = await place(client, {**ORDER, "items": ORDER["items"][:1]}, key="shared")
    assert response.status_code == 409
    assert "'shared'" in response.json()["detail"]
    assert first.json()["order_id"] in response.json()["detail"]
    assert len(await drain(amqp_url, PAYMENTS_QUEUE.name, expect=2, timeout=1.5)) == 1


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"customer_id": "c-1", "items": [', "body"),
        (json.dumps({"customer_id": "c-1"}).encode(), "items"),
        (json.dumps({**ORDER, "customer_id": ""}).encode(), "customer_id"),
        (
            json.dumps({**ORDER, "items": [{"sku": "a", "quantity": 0, "unit_price": "1"}]}).encode(),
            "quantity",
        ),
        (
            json.dumps({**ORDER, "items": [{"sku": "a", "quantity": 1, "unit_price": "0"}]}).encode(),
            "unit_price",
        ),
        (json.dumps([ORDER]).encode(), "body"),
    ],
    ids=["malformed-json", "missing-items", "empty-customer", "quantity-0", "price-0", "not-an-object"],
)
async def test_bad_input_is_422_naming_the_field_and_nothing_is_stored_or_published(
    client: httpx.AsyncClient, amqp_url: str, content: bytes, field: str
) -> None:
    response = await client.post(
        "/api/orders",
        content=content,
        headers={"Idempotency-Key": "bad", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert any(field in map(str, error["loc"]) for error in response.json()["errors"])
    # The key stays unused: a valid order with it is accepted as new.
    assert (await place(client, ORDER, key="bad")).status_code == 202
    await asyncio.sleep(0.3)
    assert await queue_depth(amqp_url, PAYMENTS_QUEUE.name) == 1


async def test_a_missing_idempotency_key_is_422_naming_the_header(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/orders", json=ORDER)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


# Whose orders


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/orders"), ("GET", "/api/orders/o-1")])
async def test_a_request_without_a_subject_is_401(client: httpx.AsyncClient, method: str, path: str) -> None:
    # No subject headers at all; an unsigned subject.
    for headers in ({"Idempotency-Key": "k"}, {"Idempotency-Key": "k", "X-Lantern-Subject": "c-1"}):
        response = await client.request(method, path, json=ORDER, headers=headers, auth=None)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_an_order_without_customer_id_belongs_to_the_subject(client: httpx.AsyncClient) -> None:
    response = await place(client, {"items": ORDER["items"]}, customer="josé|42")
    assert response.status_code == 202, response.text
    fetched = await client.get(response.headers["location"], auth=as_customer("josé|42"))
    assert fetched.json()["customer_id"] == "josé|42"


async def test_a_customer_id_other_than_the_subject_is_403_naming_both_and_stores_nothing(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    response = await place(client, {**ORDER, "customer_id": "c-2"}, key="theirs")
    assert response.status_code == 403
    assert "'c-2'" in response.json()["detail"] and "'c-1'" in response.json()["detail"]
    await asyncio.sleep(0.3)
    assert await queue_depth(amqp_url, PAYMENTS_QUEUE.name) == 0


async def test_another_customers_order_is_404_exactly_as_a_missing_one(client: httpx.AsyncClient) -> None:
    order_id = (await place(client, ORDER)).json()["order_id"]
    theirs = await client.get(f"/api/orders/{order_id}", auth=as_customer("c-2"))
    missing = await client.get("/api/orders/no-such-order", auth=as_customer("c-2"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"] == f"order {order_id!r} not found"
    assert set(theirs.json()) == set(missing.json())


async def test_the_same_key_from_two_customers_is_two_orders_each_its_own(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    mine = await place(client, ORDER, key="k-shared")
    theirs = await place(client, {"items": ORDER["items"][:1]}, key="k-shared", customer="c-2")
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["order_id"] != theirs.json()["order_id"]
    assert mine.json()["order_id"] not in theirs.text
    again = await place(client, {"items": ORDER["items"][:1]}, key="k-shared", customer="c-2")
    assert again.json()["order_id"] == theirs.json()["order_id"]
    fetched = await client.get(theirs.headers["location"], auth=as_customer("c-2"))
    assert fetched.json()["customer_id"] == "c-2"
    assert len(await drain(amqp_url, PAYMENTS_QUEUE.name, expect=3, timeout=1.5)) == 2


async def test_a_total_over_what_the_column_holds_is_422_naming_the_maximum_and_stores_nothing(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    lines = [{"sku": f"s{i}", "quantity": 10_000, "unit_price": "9999999999.99"} for i in range(100)]
    response = await place(client, {"items": lines}, key="huge")
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "items"]
    assert "exceeds the maximum of 999999999999.99" in error["msg"]
    # The largest total that fits is stored and read back whole.
    top = [{"sku": "top", "quantity": 1, "unit_price": "9999999999.99"}] * 100
    stored = await place(client, {"items": top}, key="top")
    assert stored.status_code == 202, stored.text
    assert (await client.get(stored.headers["location"])).json()["total"] == "999999999999.00"
    assert len(await drain(amqp_url, PAYMENTS_QUEUE.name, expect=2, timeout=1.5)) == 1
