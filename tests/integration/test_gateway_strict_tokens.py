"""Strict tokens at the real gateway: a key-set configuration needs issuer and audience, every
malformed token is a 401 with the RFC 6750 challenge, the rate is charged before any signature
is checked, and a key-set endpoint that misbehaves is a 503 naming what went wrong."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from devstack.loopback import serving
from gateway.bootstrap import create_app
from gateway.settings import EdgeSettings, GatewaySettings
from lantern_runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

ISSUER = "https://idp.test"
AUDIENCE = "lantern"
SECRET = "t" * 48
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(kid: str, key: rsa.RSAPrivateKey = RSA_KEY, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(value: Any) -> str:
    return b64(json.dumps(value).encode())


def rs256(claims: dict[str, Any] | None = None, kid: str = "rsa-1", **headers: Any) -> str:
    """Signed with the provider's key; claims of None are left out. Encoded by PyJWS, which
    signs any payload, since PyJWT's own encode refuses claims of the wrong type."""
    now = int(time.time())
    base = {"sub": "svc-a", "scope": "orders:read", "exp": now + 300, "iss": ISSUER, "aud": AUDIENCE}
    merged = {k: v for k, v in {**base, **(claims or {})}.items() if v is not None}
    return jwt.PyJWS().encode(json.dumps(merged).encode(), RSA_KEY, "RS256", headers={"kid": kid, **headers})


def upstream_app() -> FastAPI:
    app = FastAPI()

    @app.get("/api/orders/{order_id}")
    async def read(order_id: str, request: Request) -> dict[str, Any]:
        return {"order_id": order_id, "subject": request.headers.get("x-lantern-subject")}

    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(upstream_app()) as url:
        yield url


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[str, FastAPI]]:
    """A key-set endpoint; `answer` picks how it misbehaves, `fetches` counts the fetches."""
    app = FastAPI()
    app.state.answer = "good"
    app.state.fetches = 0
    answers: dict[str, Callable[[], Any]] = {
        "good": lambda: {"keys": [public_jwk("rsa-1")]},
        "not-json": lambda: Response("<html>oops</html>", media_type="text/html"),
        "not-utf8": lambda: Response(b"\xff\xfe{", media_type="application/json"),
        "json-not-an-object": lambda: [1, 2, 3],
        "json-not-a-key-set": lambda: {"issuer": ISSUER},
        "keys-not-a-list": lambda: {"keys": "rsa-1"},
        "unusable-keys": lambda: {"keys": [{"kty": "RSA", "kid": "rsa-1"}, {"kty": "EC", "crv": "P-9"}, 7]},
        "encryption-keys-only": lambda: {"keys": [public_jwk("rsa-1", use="enc")]},
        "no-key-ids": lambda: {"keys": [{k: v for k, v in public_jwk("x").items() if k != "kid"}]},
        "nested-too-deep": lambda: Response("[" * 100_000, media_type="application/json"),
        "http-500": lambda: Response("internal error", status_code=500),
        "http-404": lambda: Response(status_code=404),
        "redirect": lambda: Response(status_code=302, headers={"Location": "http://evil.test/jwks"}),
    }

    @app.get("/jwks.json")
    async def jwks() -> Any:
        app.state.fetches += 1
        if app.state.answer == "slow":
            await asyncio.sleep(2)
            return answers["good"]()
        return answers[app.state.answer]()

    app.state.answers = answers
    with serving(app) as url:
        yield f"{url}/jwks.json", app


@pytest.fixture
def gateway(provider: tuple[str, FastAPI], upstream: str) -> Callable[..., Any]:
    provider[1].state.answer = "good"

    @asynccontextmanager
    async def build(address: str = "203.0.113.7", **edge: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = GatewaySettings(
            orders_url=upstream,
            edge=EdgeSettings(
                **{
                    "jwks_url": provider[0],
                    "jwt_issuer": ISSUER,
                    "jwt_audience": AUDIENCE,
                    "jwks_refresh_cooldown": 0,
                    "jwks_timeout": 0.5,
                    "rate_limit": 1000.0,
                    **edge,
                }
            ),
        )
        app, _ = create_app(settings, Telemetry("gateway"))
        transport = httpx.ASGITransport(app, client=(address, 50000))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
        ):
            yield client

    return build


async def read(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    # As bytes, so a token of any characters goes out as its UTF-8 (the server reads latin-1).
    headers = {"Authorization": b"Bearer " + token.encode()} if token is not None else {}
    return await client.get("/api/orders/o-1", headers=headers)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def assert_invalid_token(response: httpx.Response) -> str:
    detail: str = assert_problem(response, 401)["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="lantern", error="invalid_token", error_description="')
    return detail


# A key-set configuration needs issuer and audience


@pytest.mark.parametrize(
    ("names", "missing"),
    [
        ({"jwt_audience": AUDIENCE}, "GATEWAY_JWT_ISSUER"),
        ({"jwt_issuer": ISSUER}, "GATEWAY_JWT_AUDIENCE"),
        ({}, "GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE"),
        ({"jwt_issuer": " ", "jwt_audience": AUDIENCE}, "GATEWAY_JWT_ISSUER"),
    ],
    ids=["no-issuer", "no-audience", "neither", "blank-issuer"],
)
def test_settings_with_a_jwks_url_refuse_to_load_without_issuer_and_audience(
    names: dict[str, str], missing: str
) -> None:
    with pytest.raises(ValidationError, match=f"GATEWAY_JWKS_URL is set, so {missing} must be set"):
        EdgeSettings(jwks_url="https://idp.test/jwks.json", **names)


def test_the_gateway_process_refuses_to_start_from_an_environment_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GATEWAY_JWT_SECRET", "GATEWAY_JWT_ISSUER", "GATEWAY_JWT_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_JWKS_URL", "https://idp.test/jwks.json")
    monkeypatch.setenv("GATEWAY_JWT_AUDIENCE", AUDIENCE)
    with pytest.raises(ValidationError, match="GATEWAY_JWT_ISSUER must be set"):
        GatewaySettings()


def test_development_secret_mode_may_leave_issuer_and_audience_unset() -> None:
    assert EdgeSettings(jwt_secret=SECRET).jwt_issuer is None


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": None}, 'missing the "iss" claim'),
        ({"aud": None}, 'missing the "aud" claim'),
        ({"iss": "https://other-idp.test"}, "not issued by 'https://idp.test'"),
        ({"aud": "another-app"}, "not meant for audience 'lantern'"),
        ({"aud": ["another-app", "yet-another"]}, "not meant for audience 'lantern'"),
        ({"iss": ["https://idp.test"]}, "not issued by"),
        ({"aud": 7}, "not meant for audience"),
    ],
    ids=["no-iss", "no-aud", "other-issuer", "other-audience", "other-audiences", "iss-list", "aud-number"],
)
async def test_a_key_set_token_must_carry_the_right_issuer_and_audience(
    gateway: Callable[..., Any], claims: dict[str, Any], reason: str
) -> None:
    async with gateway() as client:
        refused = await read(client, rs256(claims))
        accepted = await read(client, rs256({"aud": ["another-app", AUDIENCE]}))
    assert reason in assert_invalid_token(refused)
    assert accepted.status_code == 200 and accepted.json()["order_id"] == "o-1"


# Every malformed token or header is a 401 with the challenge

SIG = b64(b"\x01" * 256)
NOT_UTF8 = b64(b"\xff\xfe\xfd")
BODY = part({"sub": "svc-a", "exp": int(time.time()) + 3600, "iss": ISSUER, "aud": AUDIENCE})
MALFORMED: dict[str, tuple[Callable[[], str], str]] = {
    "kid-a-number": (lambda: f"{part({'alg': 'RS256', 'kid': 123})}.{BODY}.{SIG}", "Key ID"),
    "kid-a-list": (lambda: f"{part({'alg': 'RS256', 'kid': ['rsa-1']})}.{BODY}.{SIG}", "Key ID"),
    "kid-empty": (lambda: f"{part({'alg': 'RS256', 'kid': ''})}.{BODY}.{SIG}", "kid"),
    "kid-missing": (lambda: f"{part({'alg': 'RS256'})}.{BODY}.{SIG}", "kid"),
    "crit": (lambda: rs256(crit=["exp"]), "crit"),
    "crit-b64": (lambda: rs256(crit=["b64"], b64=False), "crit"),
    "crit-not-a-list": (lambda: rs256(crit="b64"), "crit"),
    "alg-a-list": (lambda: f"{part({'alg': ['RS256'], 'kid': 'rsa-1'})}.{BODY}.{SIG}", "alg"),
    "alg-an-object": (lambda: f"{part({'alg': {'RS256': 1}, 'kid': 'rsa-1'})}.{BODY}.{SIG}", "alg"),
    "alg-missing": (lambda: f"{part({'kid': 'rsa-1'})}.{BODY}.{SIG}", "alg"),
    "alg-null": (lambda: f"{part({'alg': None, 'kid': 'rsa-1'})}.{BODY}.{SIG}", "alg"),
    "alg-none": (lambda: f"{part({'alg': 'none', 'kid': 'rsa-1'})}.{BODY}.", "'none'"),
    "alg-hs512": (lambda: f"{part({'alg': 'HS512', 'kid': 'rsa-1'})}.{BODY}.{SIG}", "'HS512'"),
    "alg-very-long": (lambda: f"{part({'alg': 'A' * 5000, 'kid': 'rsa-1'})}.{BODY}.{SIG}", "AAAA…"),
    "header-a-list": (lambda: f"{part(['RS256'])}.{BODY}.{SIG}", "malformed"),
    "header-a-string": (lambda: f"{part('RS256')}.{BODY}.{SIG}", "malformed"),
    "header-a-number": (lambda: f"{part(7)}.{BODY}.{SIG}", "malformed"),
    "header-not-json": (lambda: f"{b64(b'{alg: RS256')}.{BODY}.{SIG}", "malformed"),
    "header-not-utf8": (lambda: f"{NOT_UTF8}.{BODY}.{SIG}", "malformed"),
    "header-not-base64": (lambda: f"!!!.{BODY}.{SIG}", "malformed"),
    "payload-not-base64": (lambda: f"{part({'alg': 'RS256', 'kid': 'rsa-1'})}.@@@.{SIG}", "malformed"),
    "payload-a-list": (lambda: jwt.PyJWS().encode(b"[1]", RSA_KEY, "RS256", {"kid": "rsa-1"}), "json object"),
    "signature-not-base64": (lambda: f"{part({'alg': 'RS256', 'kid': 'rsa-1'})}.{BODY}.***", "malformed"),
    "signature-short": (lambda: f"{part({'alg': 'RS256', 'kid': 'rsa-1'})}.{BODY}.{b64(b'x')}", "signature"),
    "unicode-junk": (lambda: "ü€😀.ü€😀.ü€😀", "malformed"),
    "only-dots": (lambda: "...", "malformed"),
    "one-dot": (lambda: ".", "malformed"),
    "two-parts": (lambda: f"{part({'alg': 'RS256', 'kid': 'rsa-1'})}.{BODY}", "malformed"),
    "four-parts": (lambda: f"{rs256()}.{SIG}", "malformed"),
    "empty-parts": (lambda: "..", "malformed"),
    "wrong-key": (
        lambda: jwt.encode({"sub": "x"}, OTHER_KEY, "RS256", headers={"kid": "rsa-1"}),
        "signature",
    ),
    "exp-a-string": (lambda: rs256({"exp": "tomorrow"}), "not valid"),
    "sub-a-number": (lambda: rs256({"sub": 42}), "Subject must be a string"),
    "sub-empty": (lambda: rs256({"sub": ""}), "sub"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_token_is_401_with_the_challenge_never_500(
    gateway: Callable[..., Any], case: str
) -> None:
    make, reason = MALFORMED[case]
    async with gateway() as client:
        response = await read(client, make())
    assert reason in assert_invalid_token(response)


@pytest.mark.parametrize("case", ["kid-a-number", "crit", "alg-a-list", "header-a-list", "only-dots"])
async def test_a_malformed_token_is_401_in_development_secret_mode_too(
    gateway: Callable[..., Any], case: str
) -> None:
    async with gateway(jwks_url=None, jwt_issuer=None, jwt_audience=None, jwt_secret=SECRET) as client:
        response = await read(client, MALFORMED[case][0]())
    assert_invalid_token(response)


@pytest.mark.parametrize(
    "authorization", ["Bearer", "Bearer ", "Bearer  a b", "bearer", "Token abc", "Bearer \t"]
)
async def test_an_odd_authorization_header_is_401_with_the_challenge(
    gateway: Callable[..., Any], authorization: str
) -> None:
    async with gateway() as client:
        response = await client.get("/api/orders/o-1", headers={"Authorization": authorization})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith('Bearer realm="lantern"')


# The rate is charged before any signature is checked


async def test_a_flood_of_bad_tokens_is_limited_before_their_keys_are_looked_up(
    gateway: Callable[..., Any], provider: tuple[str, FastAPI]
) -> None:
    state = provider[1].state
    async with gateway(rate_limit=1.0) as client:  # bursts of 2
        fetched = state.fetches
        # Each made-up kid would make the gateway fetch the key set (cooldown 0) and check a
        # signature: past the burst, neither happens.
        answers = [await read(client, rs256(kid=f"made-up-{i}")) for i in range(8)]
    assert [a.status_code for a in answers] == [401, 401] + [429] * 6
    assert state.fetches - fetched == 2
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers[2:])


async def test_varying_the_garbage_does_not_escape_the_address_limit(gateway: Callable[..., Any]) -> None:
    async with gateway(rate_limit=1.0) as client:
        statuses = [(await read(client, f"garbage-{i}.{i}.{i}")).status_code for i in range(6)]
    assert statuses == [401, 401, 429, 429, 429, 429]


async def test_a_forged_subject_cannot_spend_another_subjects_bucket(gateway: Callable[..., Any]) -> None:
    forged = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 300, "iss": ISSUER, "aud": AUDIENCE},
        OTHER_KEY,
        "RS256",
        headers={"kid": "rsa-1"},
    )
    async with gateway(rate_limit=1.0, address="198.51.100.66") as mallory:
        statuses = [(await read(mallory, forged)).status_code for _ in range(6)]
    async with gateway(rate_limit=1.0, address="203.0.113.7") as alice:
        answer = await read(alice, rs256({"sub": "alice"}))
    assert statuses == [401, 401, 429, 429, 429, 429]
    assert answer.status_code == 200
    assert answer.headers["ratelimit-remaining"] == "1"  # her burst of 2, less this request


async def test_good_tokens_sharing_an_address_do_not_spend_its_bucket(gateway: Callable[..., Any]) -> None:
    async with gateway(rate_limit=1.0) as client:  # one address, bursts of 2
        good = [await read(client, rs256({"sub": f"user-{i}"})) for i in range(6) for _ in range(2)]
        anonymous = [(await read(client, None)).status_code for _ in range(3)]
    assert {a.status_code for a in good} == {200}
    assert anonymous == [401, 401, 429]


# A key-set endpoint that misbehaves is a 503


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("not-json", "not JSON"),
        ("not-utf8", "not JSON"),
        ("nested-too-deep", "not JSON"),
        ("json-not-an-object", "not a JSON object"),
        ("json-not-a-key-set", "no usable keys"),
        ("keys-not-a-list", "no usable keys"),
        ("unusable-keys", "no usable keys"),
        ("encryption-keys-only", "no signing key"),
        ("no-key-ids", "no signing key"),
        ("http-500", "failed or did not answer"),
        ("http-404", "failed or did not answer"),
        ("redirect", "failed or did not answer"),
        ("slow", "failed or did not answer in time"),
    ],
)
async def test_a_misbehaving_key_set_endpoint_is_503_with_retry_after_naming_why(
    gateway: Callable[..., Any], provider: tuple[str, FastAPI], answer: str, reason: str
) -> None:
    provider[1].state.answer = answer
    async with gateway() as client:
        started = time.monotonic()
        response = await read(client, rs256())
        elapsed = time.monotonic() - started
    detail = assert_problem(response, 503)["detail"]
    assert "identity provider's keys are unavailable" in detail and reason in detail
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < 1.5, "the fetch is bounded by jwks_timeout (0.5 s)"


async def test_keys_fetched_before_stay_in_use_while_the_endpoint_misbehaves(
    gateway: Callable[..., Any], provider: tuple[str, FastAPI]
) -> None:
    async with gateway() as client:
        assert (await read(client, rs256())).status_code == 200
        provider[1].state.answer = "not-json"
        # An unknown kid refetches; the broken answer must not replace the good set.
        unknown = await read(client, rs256(kid="rsa-2"))
        known = await read(client, rs256())
    assert_problem(unknown, 401)
    assert known.status_code == 200
