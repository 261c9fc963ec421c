"""Whatever a bearer token holds, verifying it ends in one of two ways: an AuthFailure (a 401
with the RFC 6750 challenge) or, for a key-set token while the keys cannot be had, a 503
problem. Never another exception, which would be a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.loopback import free_port
from gateway.auth import AuthFailure, Principal, TokenVerifier
from lantern_runtime.problems import Problem

SECRET = "z" * 48


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers() | st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["HS256", "RS256", "ES256", "none", "HS512", "", "hs256"]) | ODD,
        "kid": st.sampled_from(["k-1", "", "x" * 300]) | ODD,
        "crit": st.sampled_from([["b64"], ["exp"], [], "b64"]) | ODD,
        "b64": st.booleans() | ODD,
        "typ": st.just("JWT") | ODD,
        "jku": st.just("http://evil.test/jwks") | ODD,
    },
)
CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["alice", ""]) | ODD,
        "exp": st.sampled_from([4102444800, 0]) | ODD,
        "nbf": ODD,
        "iat": ODD,
        "iss": st.sampled_from(["https://idp.test", ["https://idp.test"]]) | ODD,
        "aud": st.sampled_from(["lantern", ["lantern", 1]]) | ODD,
        "scope": ODD,
        "scp": ODD,
    },
)


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


SEGMENTS = st.one_of(
    HEADERS.map(segment),
    ODD.map(segment),  # JSON, but not an object
    st.binary(max_size=20).map(b64),  # base64 of anything
    st.text(max_size=20),  # not base64 at all, unicode junk included
)


@st.composite
def tokens(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["signed", "parts", "text"]))
    if kind == "text":
        return draw(st.text(alphabet=st.characters(codec="latin-1") | st.sampled_from(".=-_"), max_size=60))
    header = draw(SEGMENTS)
    payload = draw(st.one_of(CLAIMS.map(segment), SEGMENTS))
    if kind == "signed":  # a signature that verifies, so the claims' checks run on odd claims
        mac = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64(mac)}"
    dots = draw(st.integers(0, 4))
    parts = [header, payload, draw(st.binary(max_size=40).map(b64) | st.text(max_size=10))]
    return ".".join(parts[: dots + 1]) + "." * max(0, dots - 2)


VERIFIERS = {
    "hs256": TokenVerifier(secret=SECRET),
    "hs256-with-issuer": TokenVerifier(secret=SECRET, issuer="https://idp.test", audience="lantern"),
    # Nothing listens there: a token that gets as far as its key is a 503, never a 500.
    "jwks": TokenVerifier(
        jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",
        issuer="https://idp.test",
        audience="lantern",
        jwks_timeout=0.5,
    ),
}


@pytest.mark.parametrize("mode", list(VERIFIERS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=tokens())
async def test_any_token_is_an_auth_failure_or_a_503_never_another_error(mode: str, token: str) -> None:
    outcome = await verified(VERIFIERS[mode], token)
    if isinstance(outcome, AuthFailure):
        assert outcome.error == "invalid_token"
        assert outcome.description
    elif isinstance(outcome, Problem):
        assert mode == "jwks" and outcome.status == 503
    else:
        # Only a genuinely signed token with well-formed claims gets through.
        assert mode.startswith("hs256") and isinstance(outcome.subject, str) and outcome.subject


async def verified(verifier: TokenVerifier, token: str) -> Principal | AuthFailure | Problem:
    """What verifying gives: the principal, or the refusal; any other exception escapes."""
    try:
        return await verifier.verify(token)
    except (AuthFailure, Problem) as refused:
        return refused


def test_a_key_set_without_issuer_or_audience_is_refused_by_the_verifier_too() -> None:
    with pytest.raises(ValueError, match="GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE"):
        TokenVerifier(jwks_url="https://idp.test/jwks.json", issuer="https://idp.test")
