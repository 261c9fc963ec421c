"""orders over HTTP against real engines: SQLite and PostgreSQL, with the real broker."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lantern_runtime.telemetry import Telemetry
from order_flow.topology import PAYMENTS_QUEUE
from orders.bootstrap import create_app
from orders.settings import OrdersSettings
from tests.integration.conftest import drain, migrate, queue_depth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.rabbitmq]

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
    settings = OrdersSettings(database_url=database_url, amqp_url=amqp_url, outbox_poll_seconds=0.1)
    app, readiness = create_app(settings, Telemetry("orders"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orders") as client,
    ):
        # The lifespan yields at once and connects in the background; tables exist once ready.
        for _ in range(600):
            if not await readiness.failing():
                break
            await asyncio.sleep(0.05)
        assert await readiness.failing() == []
        yield client


async def place(client: httpx.AsyncClient, body: Any, key: str = "key-1") -> httpx.Response:
    return await client.post("/api/orders", json=body, headers={"Idempotency-Key": key})


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
    await place(client, ORDER, key="shared")
    response = await place(client, {**ORDER, "customer_id": "c-2"}, key="shared")
    assert response.status_code == 409
    assert "'shared'" in response.json()["detail"]
    assert len(await drain(amqp_url, PAYMENTS_QUEUE.name, expect=2, timeout=1.5)) == 1


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"customer_id": "c-1", "items": [', "body"),
        (json.dumps({"items": ORDER["items"]}).encode(), "customer_id"),
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
    ids=["malformed-json", "missing-customer", "quantity-0", "price-0", "not-an-object"],
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
