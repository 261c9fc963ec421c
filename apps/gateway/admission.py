"""Who may pass: a valid bearer token, within the client's rate, on a known route, with the
scopes that route asks of the method. Refusals are problems with the RFC 6750 challenge."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import trace

from gateway.auth import AuthFailure, Principal
from gateway.ratelimit import client_key
from lantern_runtime.problems import Problem

if TYPE_CHECKING:
    from gateway.auth import TokenVerifier
    from gateway.ratelimit import MemoryBuckets, RateDecision, RedisBuckets
    from gateway.routes import Route, RouteTable

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="A JWT from the identity provider with scopes orders:read and/or orders:write.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
# RFC 6750 allows only these characters in error_description.
_UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = ['Bearer realm="lantern"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_UNQUOTABLE.sub("?", description)}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)


def _challenge_for(failure: AuthFailure) -> str:
    # RFC 6750 3.1: a request without credentials gets the bare challenge, no error code.
    return challenge(failure.error, failure.description) if failure.error else challenge()


@dataclass(frozen=True)
class Admitted:
    principal: Principal
    route: Route
    rate: RateDecision


class Admission:
    """A FastAPI dependency: returns what was admitted, or raises the problem that refuses it."""

    def __init__(
        self, verifier: TokenVerifier, buckets: MemoryBuckets | RedisBuckets, routes: RouteTable
    ) -> None:
        self.verifier = verifier
        self.buckets = buckets
        self.routes = routes

    async def __call__(self, request: Request, credentials: Credentials) -> Admitted:
        # The rate is charged before any token is looked at, so a flood of bad tokens costs
        # no signature checks (nor key-set fetches) once it is over the limit. Two buckets:
        #  - the address's, taken from by every request before verification. A request whose
        #    token then verifies gives that token back: the address bucket ends up counting
        #    only requests without a valid token, so callers sharing an address (a NAT, a
        #    proxy) are not limited together while their tokens are good, and varying the
        #    garbage does not escape it;
        #  - the subject's, taken from only after the signature verified, so a forged `sub`
        #    can never spend another subject's bucket.
        address = request.client.host if request.client else None
        by_address = client_key(None, address)
        gate = await self.buckets.take(by_address)
        if not gate.admitted:
            raise Problem(429, "too many requests; slow down", headers=gate.headers())
        principal: Principal | None = None
        failure = AuthFailure("a bearer token is required", error=None)
        if credentials is not None:
            try:
                principal = await self.verifier.verify(credentials.credentials)
            except AuthFailure as refused:
                failure = refused
        if principal is None:
            raise Problem(
                401,
                failure.description,
                headers={"WWW-Authenticate": _challenge_for(failure), **gate.headers()},
            )
        _, rate = await asyncio.gather(
            self.buckets.give_back(by_address), self.buckets.take(client_key(principal.subject, address))
        )
        if not rate.admitted:
            raise Problem(429, "too many requests; slow down", headers=rate.headers())
        trace.get_current_span().set_attribute("enduser.id", principal.subject)

        route = self.routes.match(request.url.path)
        if route is None:
            raise Problem(404, f"no route for {request.url.path}")
        needed = route.scopes.get(request.method)
        if needed is None:
            raise Problem(
                405,
                f"{request.method} is not allowed on {route.prefix}",
                headers={"Allow": ", ".join(route.scopes)},
            )
        missing = sorted(set(needed) - principal.scopes)
        if missing:
            scope = " ".join(needed)
            raise Problem(
                403,
                f"{request.method} {route.prefix} needs {scope!r}; the token lacks {', '.join(missing)}",
                headers={"WWW-Authenticate": challenge("insufficient_scope", scope=scope), **rate.headers()},
            )
        return Admitted(principal, route, rate)
