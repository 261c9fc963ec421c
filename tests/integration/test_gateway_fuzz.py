"""A property of the public API, checked from the gateway's own OpenAPI document: no generated
request, valid or not, makes the gateway answer 5xx while its upstream is up.

The gateway and an orders stand-in (validating with orders' real command model and header
rule) both run as real HTTP servers on loopback; schemathesis sends what it generates."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from fastapi import APIRouter, status
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from devstack.loopback import serving
from gateway.auth import issue_token
from gateway.bootstrap import create_app
from gateway.settings import EdgeSettings, GatewaySettings
from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.problems import Problem
from lantern_runtime.telemetry import Telemetry
from orders.api import IdempotencyKey
from orders.domain import PlaceOrder

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import Case

SECRET = "f" * 48


def auth() -> dict[str, str]:
    """A fresh token per example: one made at import would expire in a long run, turning every
    later example into a 401 that proves nothing about the 5xx rule."""
    token = issue_token(SECRET, subject="fuzzer", scopes=["orders:write", "orders:read"])
    return {"Authorization": f"Bearer {token}"}


def orders_stand_in() -> Any:
    router = APIRouter(prefix="/api/orders")

    @router.post("", status_code=status.HTTP_202_ACCEPTED)
    async def place(command: PlaceOrder, idempotency_key: IdempotencyKey) -> dict[str, str]:
        return {"order_id": str(uuid.uuid4()), "status": "pending"}

    @router.get("/{order_id}")
    async def read(order_id: str) -> None:
        raise Problem(404, f"order {order_id!r} not found")

    return service_app("orders", readiness=Readiness({}), telemetry=Telemetry("orders"), routers=[router])


@pytest.fixture(scope="module")
def public_requests() -> Iterator[st.SearchStrategy[Case]]:
    """Valid and invalid requests to every /api operation of the gateway's OpenAPI document."""
    with serving(orders_stand_in()) as orders:
        edge = EdgeSettings(jwt_secret=SECRET, rate_limit=10_000)
        app, _ = create_app(GatewaySettings(orders_url=orders, edge=edge), Telemetry("gateway"))
        with serving(app) as gateway:
            schema = schemathesis.openapi.from_url(f"{gateway}/openapi.json").include(path_regex="^/api/")
            yield st.one_of(schema.as_strategy(mode) for mode in GenerationMode)


# schemathesis's own pytest plugin does not run on pytest 9 yet, so Hypothesis drives its strategy.
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_generated_request_makes_the_gateway_answer_5xx(
    public_requests: st.SearchStrategy[Case], data: st.DataObject
) -> None:
    case = data.draw(public_requests)
    response = case.call(headers=auth(), timeout=10)
    event(f"{case.method} {response.status_code}")  # shown by --hypothesis-show-statistics
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    )
