"""Tokens from an OIDC provider: keys from a real JWKS endpoint on loopback, RS256 and ES256,
rotation picked up on an unknown kid, and the algorithm tricks refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Response

from devstack.loopback import free_port, serving
from gateway.bootstrap import create_app
from gateway.settings import EdgeSettings, GatewaySettings
from lantern_runtime.telemetry import Telemetry
from tests.integration.test_gateway_edge import upstream_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(private_key: Any, kid: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(private_key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


def signed(private_key: Any, kid: str, algorithm: str, subject: str = "svc-a") -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": "orders:read",
        "exp": now + 300,
        "iss": "https://idp.test",
        "aud": "lantern",
    }
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with(key: bytes, kid: str) -> str:
    """HS256 made by hand with `key`: PyJWT itself refuses to use a PEM key as an HMAC secret."""
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(
        json.dumps(
            {
                "sub": "mallory",
                "scope": "orders:read",
                "exp": now + 300,
                "iss": "https://idp.test",
                "aud": "lantern",
            }
        ).encode()
    )
    mac = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[str, FastAPI]]:
    """A JWKS endpoint whose key set a test can swap, counting its fetches."""
    app = FastAPI()
    app.state.keys = []
    app.state.fetches = 0
    app.state.down = False

    @app.get("/.well-known/jwks.json")
    async def jwks() -> Any:
        app.state.fetches += 1
        if app.state.down:
            return Response(status_code=503)
        return {"keys": app.state.keys}

    with serving(app) as url:
        yield f"{url}/.well-known/jwks.json", app


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(upstream_app()) as url:
        yield url


@pytest.fixture
def gateway(provider: tuple[str, FastAPI], upstream: str) -> Callable[..., Any]:
    provider[1].state.keys = [public_jwk(RSA_KEY, "rsa-1"), {**public_jwk(EC_KEY, "ec-1"), "alg": "ES256"}]
    provider[1].state.down = False

    @asynccontextmanager
    async def build(**edge: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = GatewaySettings(
            orders_url=upstream,
            edge=EdgeSettings(
                **{
                    "jwks_url": provider[0],
                    "jwt_issuer": "https://idp.test",
                    "jwt_audience": "lantern",
                    "jwks_refresh_cooldown": 0,
                    **edge,
                }
            ),
        )
        app, _ = create_app(settings, Telemetry("gateway"))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client,
        ):
            yield client

    return build


async def read(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/orders/o-1", headers={"Authorization": f"Bearer {token}"})


async def test_rs256_and_es256_tokens_from_the_jwks_are_accepted(gateway: Callable[..., Any]) -> None:
    async with gateway() as client:
        rsa_answer = await read(client, signed(RSA_KEY, "rsa-1", "RS256", subject="svc-rsa"))
        ec_answer = await read(client, signed(EC_KEY, "ec-1", "ES256", subject="svc-ec"))
    assert rsa_answer.status_code == 200
    assert rsa_answer.json()["headers"]["x-lantern-subject"] == "svc-rsa"
    assert ec_answer.status_code == 200
    assert ec_answer.json()["headers"]["x-lantern-subject"] == "svc-ec"


async def test_a_rotated_key_is_fetched_on_its_unknown_kid_and_the_retired_one_refused(
    gateway: Callable[..., Any], provider: tuple[str, FastAPI]
) -> None:
    keys = provider[1].state
    async with gateway() as client:
        assert (await read(client, signed(RSA_KEY, "rsa-1", "RS256"))).status_code == 200
        fetched = keys.fetches
        assert (await read(client, signed(RSA_KEY, "rsa-1", "RS256"))).status_code == 200
        assert keys.fetches == fetched, "a known kid is served from the cache"

        keys.keys = [public_jwk(RSA_NEXT, "rsa-2")]
        rotated = await read(client, signed(RSA_NEXT, "rsa-2", "RS256"))
        assert keys.fetches == fetched + 1
        retired = await read(client, signed(RSA_KEY, "rsa-1", "RS256"))
    assert rotated.status_code == 200
    assert retired.status_code == 401
    assert "unknown key 'rsa-1'" in retired.json()["detail"]


async def test_an_unknown_kid_is_401(gateway: Callable[..., Any]) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with gateway() as client:
        response = await read(client, signed(stranger, "who-knows", "RS256"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_made_up_kids_while_the_provider_is_down_do_not_hammer_it(
    gateway: Callable[..., Any], provider: tuple[str, FastAPI]
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state = provider[1].state
    async with gateway(jwks_refresh_cooldown=0.3) as client:
        assert (await read(client, signed(RSA_KEY, "rsa-1", "RS256"))).status_code == 200
        state.down = True
        await asyncio.sleep(0.4)
        fetched = state.fetches
        answers = [await read(client, signed(stranger, f"made-up-{i}", "RS256")) for i in range(30)]
        known = await read(client, signed(RSA_KEY, "rsa-1", "RS256"))
    assert state.fetches - fetched <= 1, f"{state.fetches - fetched} fetches for 30 made-up kids"
    assert {answer.status_code for answer in answers} <= {401, 503}
    assert known.status_code == 200  # the set fetched before is still current


async def test_the_none_algorithm_is_refused(gateway: Callable[..., Any]) -> None:
    claims = {
        "sub": "mallory",
        "scope": "orders:read",
        "exp": int(time.time()) + 300,
        "iss": "https://idp.test",
        "aud": "lantern",
    }
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})
    async with gateway() as client:
        response = await read(client, unsigned)
    assert response.status_code == 401
    assert "'none'" in response.json()["detail"]


@pytest.mark.parametrize("with_secret", [False, True], ids=["jwks-only", "jwks-and-secret"])
async def test_hs256_signed_with_the_public_key_is_refused(
    gateway: Callable[..., Any], with_secret: bool
) -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_n = public_jwk(RSA_KEY, "rsa-1")["n"].encode()
    edge = {"jwt_secret": "d" * 48} if with_secret else {}
    async with gateway(**edge) as client:
        answers = [await read(client, hs256_with(key, "rsa-1")) for key in (pem, jwk_n)]
    assert [a.status_code for a in answers] == [401, 401]


async def test_a_token_claiming_another_algorithm_than_its_key_is_refused(
    gateway: Callable[..., Any],
) -> None:
    # ES256 header pointing at the RSA key: the key decides the algorithm, not the token.
    async with gateway() as client:
        response = await read(client, signed(EC_KEY, "rsa-1", "ES256"))
    assert response.status_code == 401
    assert "is for RS256" in response.json()["detail"]


async def test_an_unreachable_jwks_is_503_not_401(upstream: str) -> None:
    settings = GatewaySettings(
        orders_url=upstream,
        edge=EdgeSettings(
            jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",
            jwt_issuer="https://idp.test",
            jwt_audience="lantern",
        ),
    )
    app, _ = create_app(settings, Telemetry("gateway"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client,
    ):
        response = await read(client, signed(RSA_KEY, "rsa-1", "RS256"))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


def test_a_gateway_without_any_key_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="GATEWAY_JWKS_URL"):
        create_app(GatewaySettings(edge=EdgeSettings()), Telemetry("gateway"))


def test_a_short_development_secret_is_refused_naming_the_length() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        EdgeSettings(jwt_secret="changeme")
