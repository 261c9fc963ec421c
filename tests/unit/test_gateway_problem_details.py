"""Every service answers errors the same way: RFC 9457 problem+json, with the trace id, and
nothing of an unexpected error's internals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import APIRouter, HTTPException
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.problems import Problem
from lantern_runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Thing(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=1)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    router = APIRouter()

    @router.get("/things/{thing_id}")
    async def read(thing_id: str) -> None:
        raise HTTPException(404, detail=f"thing {thing_id!r} not found")

    @router.post("/things")
    async def create(thing: Thing) -> Thing:
        return thing

    @router.get("/teapot")
    async def teapot() -> None:
        raise Problem(418, "short and stout", type="urn:lantern:problem:teapot", extensions={"spout": 1})

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in /etc/secret")

    telemetry = Telemetry("things", tracer_provider=TracerProvider())
    app = service_app("things", readiness=Readiness({}), telemetry=telemetry, routers=[router])
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://things") as client:
        yield client


def problem_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert isinstance(body["trace_id"], str) and len(body["trace_id"]) == 32
    return body


async def test_an_http_exception_is_a_problem_naming_the_instance(client: httpx.AsyncClient) -> None:
    body = problem_of(await client.get("/things/t-9"), 404)
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert body["detail"] == "thing 't-9' not found"
    assert body["instance"] == "/things/t-9"


async def test_a_validation_error_lists_each_invalid_fields_location_and_message(
    client: httpx.AsyncClient,
) -> None:
    body = problem_of(await client.post("/things", json={"name": "", "count": 0, "extra": "x"}), 422)
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {tuple(e["loc"]) for e in errors} == {("body", "name"), ("body", "count")}
    assert all(e["msg"] and "input" not in e for e in errors)


async def test_a_raised_problem_keeps_its_type_and_extensions(client: httpx.AsyncClient) -> None:
    body = problem_of(await client.get("/teapot"), 418)
    assert body["type"] == "urn:lantern:problem:teapot"
    assert body["spout"] == 1


async def test_an_unexpected_error_is_500_without_its_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    body = problem_of(response, 500)
    assert body["detail"] == "an unexpected error occurred"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text


async def test_an_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    problem_of(await client.get("/nowhere"), 404)
