"""Who is calling: bearer JWTs checked against a JWKS (RS256/ES256) or a shared HS256 secret.

Each key source accepts only its own algorithms, so a token cannot pick how it is checked:
`none` is never accepted, and an HS256 token "signed" with a published RSA key is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from gateway.jwks import JwksKeys, KeysUnavailable, fetcher
from lantern_runtime.problems import Problem

if TYPE_CHECKING:
    from collections.abc import Iterable

HMAC_ALGORITHMS = frozenset({"HS256"})
JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})
# How much of a header value a refusal quotes back: enough to recognise, never a 16 KiB echo.
SHOWN = 40


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]


class AuthFailure(Exception):
    """Why a request is not authenticated; `error` is the RFC 6750 code, None without a token."""

    def __init__(self, description: str, error: str | None = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error


class TokenVerifier:
    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        jwks_refresh_cooldown: float = 5.0,
        jwks_timeout: float = 5.0,
    ) -> None:
        if not secret and not jwks_url:
            raise ValueError(
                "the gateway has no key to check tokens with: set GATEWAY_JWKS_URL (your OIDC "
                "provider's jwks_uri) or, for development, GATEWAY_JWT_SECRET"
            )
        if jwks_url and not (issuer and audience):
            raise ValueError("with GATEWAY_JWKS_URL, set GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE too")
        self._secret = secret
        self._jwks = (
            JwksKeys(
                fetcher(jwks_url, timeout=jwks_timeout),
                lifespan=jwks_cache_seconds,
                cooldown=jwks_refresh_cooldown,
            )
            if jwks_url
            else None
        )
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    async def verify(self, token: str) -> Principal:
        """The token's principal, or AuthFailure saying why not: whatever the token holds, the
        only other outcome is the 503 Problem of a key set that cannot be had."""
        header = _header(token)
        algorithm = header["alg"]
        key: Any
        if algorithm in HMAC_ALGORITHMS and self._secret:
            key = self._secret
        elif algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            key = await self._jwks_key(header, algorithm)
        else:
            raise AuthFailure(f"tokens signed with {_shown(algorithm)} are not accepted here")
        # Always both for key-set tokens (the constructor makes sure they are set); for the
        # development secret, each when configured.
        required = ["exp", "sub"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as error:
            raise AuthFailure("the token has expired") from error
        except jwt.ImmatureSignatureError as error:
            raise AuthFailure("the token is not valid yet") from error
        except jwt.InvalidAudienceError as error:
            raise AuthFailure(f"the token is not meant for audience {self._audience!r}") from error
        except jwt.InvalidIssuerError as error:
            raise AuthFailure(f"the token was not issued by {self._issuer!r}") from error
        except jwt.InvalidSignatureError as error:
            raise AuthFailure("the token's signature does not verify") from error
        except jwt.PyJWTError as error:
            raise AuthFailure(f"the token is not valid: {error}") from error
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthFailure("the token's sub claim must be a non-empty string")
        return Principal(subject, _scopes(claims))

    async def _jwks_key(self, header: dict[str, Any], algorithm: str) -> Any:
        assert self._jwks is not None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthFailure("the token names no key (kid)")
        try:
            signing_key = await self._jwks.key(kid)
        except KeysUnavailable as error:
            raise Problem(503, str(error), headers={"Retry-After": "5"}) from error
        if signing_key is None:
            raise AuthFailure(f"the token is signed by an unknown key {_shown(kid)}")
        # The key decides its algorithm (its `alg`, or its type); the token's header must agree.
        if signing_key.algorithm_name != algorithm:
            raise AuthFailure(f"key {_shown(kid)} is for {signing_key.algorithm_name}, not {algorithm}")
        return signing_key.key


def _header(token: str) -> dict[str, Any]:
    """The token's header, its fields' types checked before anything relies on them."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise AuthFailure(f"the token is malformed: {error}") from error
    except ValueError as error:  # text that is no token at all (e.g. not encodable)
        raise AuthFailure("the token is malformed: not a JWT") from error
    algorithm = header.get("alg")
    if not isinstance(algorithm, str):
        raise AuthFailure("the token's header names no algorithm (alg must be a string)")
    if "crit" in header:
        # RFC 7515 4.1.11: extensions listed as critical must be understood; none are here.
        raise AuthFailure("the token's header lists critical extensions (crit); none are supported")
    if "kid" in header and not isinstance(header["kid"], str):
        raise AuthFailure("the token's key id (kid) must be a string")
    return header


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN else value[:SHOWN] + "…")


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    # OAuth 2 (RFC 8693) uses a space-separated "scope"; some providers send a list in "scp".
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(str(item) for item in value)
    return frozenset(found)


def issue_token(
    secret: str,
    *,
    subject: str,
    scopes: Iterable[str],
    ttl: float = 3600.0,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token for development and tests, the kind GATEWAY_JWT_SECRET verifies."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "scope": " ".join(scopes), "iat": now, "exp": now + int(ttl)}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
