"""No single request stalls the gateway: a real gateway process (uvicorn on a loopback port,
its own event loop) is sent the worst bodies that can be built, all at once, while /healthz
is polled. Every bad body is refused with a problem, and every probe answers within a second."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI, Request

from devstack.loopback import free_port, serving
from gateway.auth import issue_token

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = "w" * 48
MAX_BODY = 1024 * 1024
MAX_DEPTH = 32
ROUNDS = 3


def upstream_app() -> FastAPI:
    """Stands in for orders: accepts whatever reaches it, saying how large it was."""
    app = FastAPI()

    @app.post("/api/orders", status_code=202)
    async def place(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


def fill(prefix: bytes, unit: bytes, suffix: bytes = b"", size: int = MAX_BODY) -> bytes:
    """`prefix`, then `unit` repeated, then `suffix`: at most `size` bytes."""
    return prefix + unit * ((size - len(prefix) - len(suffix)) // len(unit)) + suffix


TOO_DEEP = b"[" * (MAX_DEPTH + 1)
# (name, Content-Type, body, the status that refuses it)
WORST = [
    # The old regex's quadratic case, after enough nesting to be refused: the scan must still
    # get through the whole string (or give up early) in linear time.
    ("quote-escaped-quotes", "application/json", fill(TOO_DEEP + b'"', b'\\"'), 400),
    ("escaped-quotes-then-deep", "application/json", fill(b'["', b'\\"', b'",' + TOO_DEEP)[:MAX_BODY], 400),
    ("one-byte-over", "application/json", fill(b'"', b'\\"', size=MAX_BODY + 2), 413),
    ("backslashes", "application/json", fill(TOO_DEEP + b'"', b"\\"), 400),
    ("backslashes-then-deep", "application/json", fill(b'["', b"\\\\", b'",' + TOO_DEEP), 400),
    ("nested", "application/json", b"[" * MAX_BODY, 400),
    ("nested-objects", "application/json", fill(b"", b'{"a":'), 400),
    ("flat-then-deep", "application/json", fill(b"[", b"[],", TOO_DEEP), 400),
    ("short-strings-then-deep", "application/json", fill(b"[", b'"[",', TOO_DEEP), 400),
    ("quotes-then-deep", "application/json", fill(b"[", b'"",', TOO_DEEP), 400),
    ("upper-case-json", "application/JSON", TOO_DEEP + b"]" * (MAX_DEPTH + 1), 400),
    ("problem-json", "Application/Problem+JSON; charset=utf-8", fill(b"", b"[", size=4096), 400),
    ("vendor-json", "application/vnd.x+json", fill(b"", b"{", size=4096), 400),
    ("no-content-type", "", fill(b"", b"[", size=4096), 400),
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path: Path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with serving(upstream_app()) as upstream:
        port = free_port()
        env = {
            **os.environ,
            "PORT": str(port),
            "GATEWAY_JWT_SECRET": SECRET,
            "GATEWAY_RATE_LIMIT": "100000",
            "GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
            "GATEWAY_MAX_JSON_DEPTH": str(MAX_DEPTH),
            "GATEWAY_UPSTREAMS": json.dumps({"orders": upstream}),
            "OTEL_SDK_DISABLED": "true",
        }
        env.pop("REDIS_URL", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, f"the gateway exited: {log_path.read_text()}"
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not get ready"
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(20)


AUTH = {"Authorization": f"Bearer {issue_token(SECRET, subject='mallory', scopes=['orders:write'])}"}


async def send(client: httpx.AsyncClient, content_type: str, body: bytes) -> httpx.Response:
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    if content_type:
        headers["Content-Type"] = content_type
    return await client.post("/api/orders", content=body, headers=headers)


async def test_the_worst_bodies_are_refused_while_healthz_answers_within_a_second(gateway: str) -> None:
    probes: list[tuple[float, float]] = []  # (sent, answered), monotonic
    attacking = True

    async with (
        httpx.AsyncClient(base_url=gateway, timeout=60) as attacker,
        httpx.AsyncClient(base_url=gateway, timeout=5) as prober,
    ):

        async def probe() -> None:
            while attacking:
                sent = time.monotonic()
                response = await prober.get("/healthz")
                probes.append((sent, time.monotonic()))
                assert response.status_code == 200
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(probe())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        # Each worst body three times, all at once: far more work than one request's.
        answers = await asyncio.gather(
            *(send(attacker, content_type, body) for _ in range(ROUNDS) for _, content_type, body, _ in WORST)
        )
        ended = time.monotonic()
        await asyncio.sleep(0.2)
        attacking = False
        await poller

    for (name, _, _, status), answer in zip(WORST * ROUNDS, answers, strict=True):
        assert answer.status_code == status, f"{name}: {answer.status_code} {answer.text[:200]}"
        assert answer.headers["content-type"] == "application/problem+json", name
        problem = answer.json()
        assert problem["status"] == status
        assert ("nests deeper than 32" if status == 400 else "exceeds") in problem["detail"], name
    during = [(sent, answered) for sent, answered in probes if sent < ended and answered > started]
    assert len(during) >= 2, f"{len(during)} probes during the {ended - started:.2f} s attack"
    slowest = max(answered - sent for sent, answered in probes)
    assert slowest < 1.0, f"the slowest /healthz took {slowest:.2f} s"


async def test_a_shallow_json_body_of_any_json_media_type_still_goes_through(gateway: str) -> None:
    order = json.dumps({"customer_id": '[{\\"', "items": [[[]]] * 3}).encode()
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for content_type in ("application/json", "application/JSON; charset=UTF-8", "application/vnd.x+json"):
            answer = await send(client, content_type, order)
            assert answer.status_code == 202, f"{content_type}: {answer.text}"
            assert answer.json()["size"] == len(order)
