"""Services trust X-Lantern-Subject only when the gateway signed it."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.subject import SIGNATURE_HEADER, SUBJECT_HEADER, sign_subject
from lantern_runtime.telemetry import Telemetry

SECRET = "s" * 40


def app_seeing_headers() -> FastAPI:
    app = service_app("orders", readiness=Readiness({}), telemetry=Telemetry("orders"), subject_secret=SECRET)

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {"subject": request.headers.get(SUBJECT_HEADER)}

    return app


async def ask(headers: dict[str, str]) -> Any:
    transport = httpx.ASGITransport(app_seeing_headers())
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        return (await client.get("/whoami", headers=headers)).json()["subject"]


async def test_a_subject_signed_by_the_gateway_reaches_the_handler() -> None:
    headers = {SUBJECT_HEADER: "alice", SIGNATURE_HEADER: sign_subject(SECRET, "alice")}
    assert await ask(headers) == "alice"


async def test_an_unsigned_subject_is_removed() -> None:
    assert await ask({SUBJECT_HEADER: "mallory"}) is None


async def test_a_subject_signed_with_another_secret_is_removed() -> None:
    headers = {SUBJECT_HEADER: "mallory", SIGNATURE_HEADER: sign_subject("x" * 40, "mallory")}
    assert await ask(headers) is None


async def test_a_replayed_old_signature_is_removed() -> None:
    headers = {SUBJECT_HEADER: "alice", SIGNATURE_HEADER: sign_subject(SECRET, "alice", now=0)}
    assert await ask(headers) is None
