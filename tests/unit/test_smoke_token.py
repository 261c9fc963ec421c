"""The helm test mints its own token in development mode; the gateway must accept it."""

from __future__ import annotations

import asyncio

from gateway.auth import TokenVerifier
from lantern_runtime.smoke import SMOKE_SCOPES, mint_token

SECRET = "s" * 48


def test_a_minted_smoke_token_passes_the_gateways_own_check() -> None:
    principal = asyncio.run(TokenVerifier(secret=SECRET).verify(mint_token(SECRET)))
    assert principal.subject == "helm-test"
    assert set(SMOKE_SCOPES) <= principal.scopes


def test_a_minted_smoke_token_carries_the_issuer_and_audience_the_gateway_requires() -> None:
    verifier = TokenVerifier(secret=SECRET, issuer="https://lantern.test", audience="lantern")
    token = mint_token(SECRET, issuer="https://lantern.test", audience="lantern")
    assert asyncio.run(verifier.verify(token)).subject == "helm-test"
