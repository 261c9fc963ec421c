"""The internal list endpoints, notifier's GET /notifications (on SQLite and PostgreSQL) and bank's
GET /authorizations: one order's records, at most `limit` of them, never every record."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from bank.bootstrap import create_app as create_bank
from bank.settings import BankSettings
from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.listing import DEFAULT_LIMIT, MAX_LIMIT
from lantern_runtime.problems import PROBLEM_JSON
from lantern_runtime.telemetry import Telemetry
from notifier.api import notifications_router
from notifier.notifications import NotificationSender, metadata
from tests.integration.conftest import engine_with

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI


def client_of(app: FastAPI, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=f"http://{name}")


@pytest.fixture
async def notifier(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """notifier's API over its migrated database, with three notifications of order o-1 and one of o-2."""
    async with engine_with(database_url, metadata) as engine:
        sender = NotificationSender(engine, None)
        for n, order_id in enumerate(["o-1", "o-1", "o-1", "o-2"]):
            await sender.send(
                message_id=f"m-{n}", order_id=order_id, customer_id="c-1", kind="confirmed", text=""
            )
        app = service_app(
            "notifier",
            readiness=Readiness({}),
            telemetry=Telemetry("notifier"),
            routers=[notifications_router(sender)],
        )
        async with client_of(app, "notifier") as client:
            yield client


@pytest.fixture
async def bank() -> AsyncIterator[httpx.AsyncClient]:
    """bank's API with DEFAULT_LIMIT + 1 authorizations of order o-1 and one of o-2."""
    app, _ = create_bank(BankSettings(), Telemetry("bank"))
    async with client_of(app, "bank") as client:
        for n, order_id in enumerate(["o-1"] * (DEFAULT_LIMIT + 1) + ["o-2"]):
            placed = await client.post(
                "/authorizations",
                json={"order_id": order_id, "amount": "10.00"},
                headers={"Idempotency-Key": f"k-{n}"},
            )
            assert placed.status_code == 201, placed.text
        yield client


def assert_names_the_parameter(response: httpx.Response, parameter: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert f"query.{parameter}" in problem["detail"]
    assert [error["loc"] for error in problem["errors"]] == [["query", parameter]]


async def test_notifications_without_an_order_id_are_a_422_naming_it(notifier: httpx.AsyncClient) -> None:
    assert_names_the_parameter(await notifier.get("/notifications"), "order_id")
    assert_names_the_parameter(await notifier.get("/notifications", params={"order_id": ""}), "order_id")


async def test_notifications_are_those_of_the_order_asked_for_up_to_the_limit(
    notifier: httpx.AsyncClient,
) -> None:
    every = (await notifier.get("/notifications", params={"order_id": "o-1"})).json()
    assert [n["message_id"] for n in every] == ["m-0", "m-1", "m-2"]
    capped = await notifier.get("/notifications", params={"order_id": "o-1", "limit": 2})
    assert capped.status_code == 200
    assert [n["message_id"] for n in capped.json()] == ["m-0", "m-1"]
    assert (await notifier.get("/notifications", params={"order_id": "o-3"})).json() == []


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, "many"])
async def test_a_notifications_limit_out_of_range_is_a_422_naming_it(
    notifier: httpx.AsyncClient, limit: object
) -> None:
    response = await notifier.get("/notifications", params={"order_id": "o-1", "limit": limit})
    assert_names_the_parameter(response, "limit")


async def test_notifications_up_to_the_maximum_limit_are_answered(notifier: httpx.AsyncClient) -> None:
    response = await notifier.get("/notifications", params={"order_id": "o-1", "limit": MAX_LIMIT})
    assert response.status_code == 200
    assert len(response.json()) == 3


async def test_authorizations_without_an_order_id_are_a_422_naming_it(bank: httpx.AsyncClient) -> None:
    assert_names_the_parameter(await bank.get("/authorizations"), "order_id")


async def test_authorizations_are_the_orders_own_and_capped_by_default_and_by_the_limit(
    bank: httpx.AsyncClient,
) -> None:
    by_default = (await bank.get("/authorizations", params={"order_id": "o-1"})).json()
    assert len(by_default) == DEFAULT_LIMIT
    assert {a["order_id"] for a in by_default} == {"o-1"}
    assert [a["idempotency_key"] for a in by_default] == [f"k-{n}" for n in range(DEFAULT_LIMIT)]
    capped = (await bank.get("/authorizations", params={"order_id": "o-1", "limit": 5})).json()
    assert [a["idempotency_key"] for a in capped] == [f"k-{n}" for n in range(5)]
    more = (await bank.get("/authorizations", params={"order_id": "o-1", "limit": MAX_LIMIT})).json()
    assert len(more) == DEFAULT_LIMIT + 1
    [other] = (await bank.get("/authorizations", params={"order_id": "o-2"})).json()
    assert other["idempotency_key"] == f"k-{DEFAULT_LIMIT + 1}"


@pytest.mark.parametrize("limit", [0, MAX_LIMIT + 1])
async def test_an_authorizations_limit_out_of_range_is_a_422_naming_it(
    bank: httpx.AsyncClient, limit: int
) -> None:
    response = await bank.get("/authorizations", params={"order_id": "o-1", "limit": limit})
    assert_names_the_parameter(response, "limit")
