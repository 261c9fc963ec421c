"""The gateway in process, in front of a real HTTP upstream on loopback: who gets in, what they
may send, where it goes and how it answers."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, Request, Response
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.loopback import free_port, serving
from gateway.auth import issue_token
from gateway.bootstrap import create_app
from gateway.settings import EdgeSettings, GatewaySettings
from lantern_runtime.subject import SubjectRefused, verify_subject
from lantern_runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

SECRET = "s" * 48
SUBJECT_SECRET = "k" * 48
PROBLEM_BODY = b'{"type":"urn:orders:gone","title":"Gone","status":410,"detail":"upstream words, kept"}'
READ_WRITE = ("orders:write", "orders:read")


def upstream_app() -> FastAPI:
    """Stands in for orders: echoes what reached it, so tests see what the gateway forwarded."""
    app = FastAPI()
    app.state.seen = []

    @app.post("/api/orders", status_code=202)
    async def place(request: Request) -> dict[str, Any]:
        body = await request.body()
        app.state.seen.append(len(body))
        return {"order_id": "o-1", "status": "pending", "headers": dict(request.headers), "size": len(body)}

    @app.get("/api/orders/gone")
    async def gone() -> Response:
        return Response(PROBLEM_BODY, status_code=410, media_type="application/problem+json")

    @app.get("/api/orders/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(3)
        return {"status": "late"}

    @app.get("/api/orders/{order_id}")
    async def read(order_id: str, request: Request) -> dict[str, Any]:
        return {"order_id": order_id, "headers": dict(request.headers)}

    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FastAPI]]:
    app = upstream_app()
    with serving(app) as url:
        yield url, app


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def gateway(upstream: tuple[str, FastAPI], spans: InMemorySpanExporter) -> Callable[..., Any]:
    """Builds a gateway with edge settings overridden; use as `async with gateway(...) as client`."""

    @asynccontextmanager
    async def build(**edge: Any) -> AsyncIterator[httpx.AsyncClient]:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        settings = GatewaySettings(
            orders_url=upstream[0],
            edge=EdgeSettings(
                **{"jwt_secret": SECRET, "subject_secret": SUBJECT_SECRET, "rate_limit": 1000.0, **edge}
            ),
        )
        app, _ = create_app(settings, Telemetry("gateway", tracer_provider=provider))
        transport = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
        ):
            yield client

    return build


@asynccontextmanager
async def gateway_without_orders() -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose orders upstream is a port nobody listens on."""
    settings = GatewaySettings(
        orders_url=f"http://127.0.0.1:{free_port()}", edge=EdgeSettings(jwt_secret=SECRET)
    )
    app, _ = create_app(settings, Telemetry("gateway"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client,
    ):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(scopes: tuple[str, ...] = READ_WRITE, subject: str = "alice", **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": subject, "scope": " ".join(scopes), "iat": now, "exp": now + 300, **claims},
        SECRET,
        algorithm="HS256",
    )


ORDER = {"customer_id": "c-1", "items": [{"sku": "lamp", "quantity": 1, "unit_price": "1.00"}]}


async def place(client: httpx.AsyncClient, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("json", ORDER)
    return await client.post("/api/orders", headers={"Idempotency-Key": "k-1", **headers}, **kwargs)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= body.keys()
    return body


# Who gets in


def signed_by(key: str | None, algorithm: str, **claims: Any) -> dict[str, str]:
    return bearer(jwt.encode({"exp": int(time.time()) + 60, **claims}, key, algorithm=algorithm))


# Each case builds its headers when it runs, not when pytest collects it: a token made at
# collection with nbf = now + 300 s is inside the leeway by the time a long suite reaches it.
@pytest.mark.parametrize(
    ("make_headers", "error", "reason"),
    [
        (dict, None, "bearer token is required"),
        (lambda: {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, None, "bearer token is required"),
        (lambda: bearer("not-a-jwt"), "invalid_token", "malformed"),
        (lambda: bearer(token(exp=int(time.time()) - 120)), "invalid_token", "expired"),
        (lambda: bearer(token(nbf=int(time.time()) + 300)), "invalid_token", "not valid yet"),
        (lambda: signed_by("x" * 48, "HS256", sub="alice"), "invalid_token", "signature"),
        (lambda: signed_by(None, "none", sub="alice"), "invalid_token", "'none'"),
        (lambda: signed_by(SECRET, "HS256", scope="orders:write"), "invalid_token", "sub"),
    ],
    ids=[
        "missing",
        "not-bearer",
        "malformed",
        "expired",
        "not-yet-valid",
        "wrong-signature",
        "alg-none",
        "no-subject",
    ],
)
async def test_a_request_without_a_valid_token_is_401_with_a_bearer_challenge_and_never_forwarded(
    gateway: Callable[..., Any],
    upstream: tuple[str, FastAPI],
    make_headers: Callable[[], dict[str, str]],
    error: str | None,
    reason: str,
) -> None:
    before = len(upstream[1].state.seen)
    async with gateway() as client:
        response = await place(client, make_headers())
    body = assert_problem(response, 401)
    assert reason in body["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="lantern"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert len(upstream[1].state.seen) == before


async def test_an_expired_token_within_the_leeway_is_still_accepted(gateway: Callable[..., Any]) -> None:
    async with gateway(jwt_leeway=30) as client:
        response = await place(client, bearer(token(exp=int(time.time()) - 5)))
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "somebody-else", "iss": "https://idp.test"}, "audience"),
        ({"aud": "lantern-api", "iss": "https://evil.test"}, "issued"),
    ],
    ids=["wrong-audience", "wrong-issuer"],
)
async def test_a_token_for_another_audience_or_from_another_issuer_is_401(
    gateway: Callable[..., Any], claims: dict[str, str], why: str
) -> None:
    async with gateway(jwt_audience="lantern-api", jwt_issuer="https://idp.test") as client:
        refused = await place(client, bearer(token(**claims)))
        accepted = await place(client, bearer(token(aud="lantern-api", iss="https://idp.test")))
    assert why in assert_problem(refused, 401)["detail"]
    assert accepted.status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "scopes", "needed"),
    [
        ("POST", "/api/orders", ("orders:read",), "orders:write"),
        ("GET", "/api/orders/o-1", ("orders:write",), "orders:read"),
    ],
)
async def test_a_token_without_the_routes_scope_is_403_naming_it(
    gateway: Callable[..., Any], method: str, path: str, scopes: tuple[str, ...], needed: str
) -> None:
    headers = {"Idempotency-Key": "k", **bearer(token(scopes))}
    async with gateway() as client:
        response = await client.request(method, path, headers=headers, json=ORDER)
    assert needed in assert_problem(response, 403)["detail"]
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="lantern", error="insufficient_scope", scope="{needed}"'
    )


def genuine_for_orders(seen: dict[str, str], subject: str) -> str:
    """What orders would make of `subject` under the signature the upstream saw on POST /api/orders."""
    signature = seen["x-lantern-subject-signature"]
    return verify_subject(
        SUBJECT_SECRET, subject, signature, method="POST", path=b"/api/orders", service="orders"
    )


async def test_the_subject_goes_downstream_signed_and_a_client_sent_copy_is_dropped(
    gateway: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    forged = {"X-Lantern-Subject": "root", "X-Lantern-Subject-Signature": "t=1,v1=00"}
    async with gateway() as client:
        response = await place(client, {**bearer(token(subject="alice")), **forged})
    seen = response.json()["headers"]
    assert seen["x-lantern-subject"] == "alice"
    assert genuine_for_orders(seen, "alice") == "alice"
    with pytest.raises(SubjectRefused):
        genuine_for_orders(seen, "root")
    [server] = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert server.attributes is not None and server.attributes["enduser.id"] == "alice"


async def test_a_non_ascii_subject_goes_downstream_percent_encoded_and_signed(
    gateway: Callable[..., Any],
) -> None:
    async with gateway() as client:
        response = await place(client, bearer(token(subject="josé|42")))
    seen = response.json()["headers"]
    assert seen["x-lantern-subject"] == "jos%C3%A9|42"
    assert genuine_for_orders(seen, "jos%C3%A9|42") == "josé|42"


async def test_log_records_written_during_a_request_carry_its_request_id(
    gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway_without_orders() as client:
        with caplog.at_level("WARNING", logger="gateway.proxy"):
            await client.get("/api/orders/o-1", headers={**bearer(token()), "X-Request-ID": "trace-me-1"})
    [record] = [r for r in caplog.records if r.getMessage() == "upstream failed"]
    assert record.request_id == "trace-me-1"  # type: ignore[attr-defined]


# What they may send


async def test_a_client_over_its_rate_gets_429_with_retry_after_while_another_client_is_untouched(
    gateway: Callable[..., Any],
) -> None:
    async with gateway(rate_limit=1.0) as client:  # bursts of 2
        alice = [
            await client.get("/api/orders/o-1", headers=bearer(token(subject="alice"))) for _ in range(3)
        ]
        bob = await client.get("/api/orders/o-1", headers=bearer(token(subject="bob")))
    assert [r.status_code for r in alice] == [200, 200, 429]
    assert_problem(alice[2], 429)
    assert int(alice[2].headers["retry-after"]) >= 1
    assert alice[2].headers["ratelimit-limit"] == "2"
    assert alice[2].headers["ratelimit-remaining"] == "0"
    assert alice[1].headers["ratelimit-remaining"] == "0" and alice[0].headers["ratelimit-remaining"] == "1"
    assert bob.status_code == 200


async def test_unauthenticated_callers_are_rate_limited_by_address(gateway: Callable[..., Any]) -> None:
    async with gateway(rate_limit=1.0) as client:
        statuses = [(await client.get("/api/orders/o-1")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_a_body_declared_over_the_cap_is_413_before_it_is_read(
    gateway: Callable[..., Any], upstream: tuple[str, FastAPI]
) -> None:
    before = len(upstream[1].state.seen)
    async with gateway(max_body_bytes=100) as client:
        response = await place(client, bearer(token()), json=None, content=b"x" * 101)
        at_limit = await place(client, bearer(token()), json=None, content=b"y" * 100)
    assert_problem(response, 413)
    assert at_limit.status_code == 202 and at_limit.json()["size"] == 100
    assert len(upstream[1].state.seen) == before + 1


async def test_a_streamed_body_without_content_length_is_cut_off_at_the_cap(
    gateway: Callable[..., Any], upstream: tuple[str, FastAPI]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"z" * 64

    before = len(upstream[1].state.seen)
    async with gateway(max_body_bytes=1000) as client:
        response = await place(client, bearer(token()), json=None, content=chunks())
    assert_problem(response, 413)
    assert len(upstream[1].state.seen) == before


async def test_json_nested_deeper_than_the_cap_is_400(gateway: Callable[..., Any]) -> None:
    deep = "[" * 40 + "]" * 40
    async with gateway(max_json_depth=32) as client:
        response = await place(
            client, {**bearer(token()), "Content-Type": "application/json"}, json=None, content=deep.encode()
        )
        strings_do_not_count = await place(client, bearer(token()), json={**ORDER, "customer_id": "[" * 64})
    assert "32" in assert_problem(response, 400)["detail"]
    assert strings_do_not_count.status_code == 202


async def test_headers_over_the_cap_are_431(gateway: Callable[..., Any]) -> None:
    async with gateway(max_header_bytes=2048) as client:
        response = await client.get("/api/orders/o-1", headers={**bearer(token()), "X-Filler": "f" * 4096})
    assert_problem(response, 431)


async def test_a_request_past_the_timeout_is_504(gateway: Callable[..., Any]) -> None:
    async with gateway(request_timeout=0.5) as client:
        started = time.monotonic()
        response = await client.get("/api/orders/slow", headers=bearer(token()))
    assert_problem(response, 504)
    assert time.monotonic() - started < 2.5


# Where requests go


async def test_an_unknown_route_is_404_problem(gateway: Callable[..., Any]) -> None:
    async with gateway() as client:
        unknown = await client.get("/api/unknown", headers=bearer(token()))
        sneaky = await client.get("/api/orders/../admin", headers=bearer(token()))
        lookalike = await client.get("/api/ordersadmin", headers=bearer(token()))
    for response in (unknown, sneaky, lookalike):
        assert_problem(response, 404)


async def test_the_route_table_comes_from_a_file_and_maps_services_to_urls(
    gateway: Callable[..., Any], upstream: tuple[str, FastAPI], tmp_path: Any
) -> None:
    routes = tmp_path / "routes.json"
    table = [{"prefix": "/api/orders", "service": "billing", "port": 9, "scopes": {"GET": ["billing:read"]}}]
    routes.write_text(json.dumps(table))
    async with gateway(routes_file=routes, upstreams={"billing": upstream[0]}) as client:
        allowed = await client.get("/api/orders/o-7", headers=bearer(token(("billing:read",))))
        post = await place(client, bearer(token(("billing:read",))))
        old_scope = await client.get("/api/orders/o-7", headers=bearer(token(("orders:read",))))
    assert allowed.json()["order_id"] == "o-7"
    assert_problem(post, 405)
    assert post.headers["allow"] == "GET"
    assert_problem(old_scope, 403)


async def test_a_valid_request_id_is_kept_forwarded_and_echoed_and_a_bad_one_replaced(
    gateway: Callable[..., Any], spans: InMemorySpanExporter
) -> None:
    async with gateway() as client:
        kept = await client.get("/api/orders/o-1", headers={**bearer(token()), "X-Request-ID": "req-42.a:b"})
        replaced = await client.get(
            "/api/orders/o-1", headers={**bearer(token()), "X-Request-ID": "bad id\x7f"}
        )
    assert kept.headers["x-request-id"] == "req-42.a:b"
    assert kept.json()["headers"]["x-request-id"] == "req-42.a:b"
    assert replaced.headers["x-request-id"] != "bad id\x7f"
    assert replaced.json()["headers"]["x-request-id"] == replaced.headers["x-request-id"]
    ids = {s.attributes.get("lantern.request_id") for s in spans.get_finished_spans() if s.attributes}
    assert "req-42.a:b" in ids


CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("edge", "honoured"),
    [
        ({}, False),
        ({"trust_client_traceparent": True}, True),
        ({"trusted_trace_cidrs": "203.0.113.0/24"}, True),
        ({"trusted_trace_cidrs": "10.0.0.0/8"}, False),
    ],
    ids=["default", "trusted", "trusted-cidr", "other-cidr"],
)
async def test_a_clients_traceparent_is_honoured_only_when_trusted(
    gateway: Callable[..., Any], edge: dict[str, Any], honoured: bool
) -> None:
    async with gateway(**edge) as client:
        response = await client.get("/api/orders/o-1", headers={"traceparent": CLIENT_TRACEPARENT})
    assert (assert_problem(response, 401)["trace_id"] == CLIENT_TRACE) is honoured


# How it answers


async def test_an_upstream_problem_is_relayed_unchanged(gateway: Callable[..., Any]) -> None:
    async with gateway() as client:
        response = await client.get("/api/orders/gone", headers=bearer(token()))
    assert response.status_code == 410
    assert response.headers["content-type"] == "application/problem+json"
    assert response.content == PROBLEM_BODY


async def test_an_unreachable_upstream_is_503_problem_with_retry_after(upstream: tuple[str, FastAPI]) -> None:
    async with gateway_without_orders() as client:
        response = await client.get("/api/orders/o-1", headers=bearer(token()))
    assert "orders is unavailable" in assert_problem(response, 503)["detail"]
    assert int(response.headers["retry-after"]) >= 1


async def test_every_answer_carries_the_security_headers_and_api_answers_are_not_stored(
    gateway: Callable[..., Any],
) -> None:
    async with gateway(hsts_max_age=31536000) as client:
        api = await client.get("/api/orders/o-1", headers=bearer(token()))
        refused = await client.get("/api/orders/o-1")
        probe = await client.get("/healthz")
    for response in (api, refused, probe):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    assert api.headers["cache-control"] == refused.headers["cache-control"] == "no-store"


async def test_cors_is_off_by_default_and_answers_only_configured_origins(
    gateway: Callable[..., Any],
) -> None:
    preflight = {"Origin": "https://shop.test", "Access-Control-Request-Method": "POST"}
    async with gateway() as client:
        off = await client.options("/api/orders", headers=preflight)
    async with gateway(cors_origins="https://shop.test, https://admin.test") as client:
        on = await client.options("/api/orders", headers=preflight)
        other = await client.options("/api/orders", headers={**preflight, "Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in off.headers
    assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "https://shop.test"
    assert "access-control-allow-origin" not in other.headers


async def test_the_openapi_document_describes_the_public_api_and_its_bearer_scheme(
    gateway: Callable[..., Any],
) -> None:
    async with gateway() as client:
        schema = (await client.get("/openapi.json")).json()
    place_order = schema["paths"]["/api/orders"]["post"]
    assert place_order["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PlaceOrder")
    assert {"customer_id", "items"} <= schema["components"]["schemas"]["PlaceOrder"]["properties"].keys()
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in place_order["parameters"])
    assert "application/problem+json" in place_order["responses"]["401"]["content"]
    assert "/api/orders/{order_id}" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert place_order["security"] == [{"bearer": []}]


def test_issue_token_makes_tokens_the_gateway_accepts() -> None:
    claims = jwt.decode(issue_token(SECRET, subject="dev", scopes=READ_WRITE), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "dev" and claims["scope"] == "orders:write orders:read"
