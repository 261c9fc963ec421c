"""Wires gateway: token checks, rate limits, the route table with one upstream client per
route, and the edge middleware around it all."""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi.middleware.cors import CORSMiddleware

from gateway.admission import Admission
from gateway.api import public_router
from gateway.auth import TokenVerifier
from gateway.edge import Edge, TrustBoundary, add_request_id_to_logs
from gateway.public import finish_openapi
from gateway.ratelimit import MemoryBuckets, RedisBuckets
from gateway.settings import GatewaySettings
from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.resilience import UpstreamClient
from lantern_runtime.service import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "gateway"
EXPOSED_HEADERS = [
    "Location",
    "Retry-After",
    "X-Request-ID",
    "traceresponse",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
]


def create_app(settings: GatewaySettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    edge = settings.edge
    verifier = TokenVerifier(
        secret=edge.jwt_secret.get_secret_value() if edge.jwt_secret else None,
        jwks_url=edge.jwks_url,
        issuer=edge.jwt_issuer,
        audience=edge.jwt_audience,
        leeway=edge.jwt_leeway,
        jwks_cache_seconds=edge.jwks_cache_seconds,
        jwks_refresh_cooldown=edge.jwks_refresh_cooldown,
        jwks_timeout=edge.jwks_timeout,
    )
    buckets = (
        RedisBuckets(
            settings.redis_url, edge.rate_limit, prefix=edge.rate_limit_prefix, timeout=edge.redis_timeout
        )
        if settings.redis_url
        else MemoryBuckets(edge.rate_limit)
    )
    table = settings.route_table()
    upstreams = {
        route.prefix: UpstreamClient(route.service, settings.upstream_url(route), route.upstream)
        for route in table.routes
    }
    readiness = Readiness({})
    add_request_id_to_logs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for client in upstreams.values():
                await client.aclose()
            if isinstance(buckets, RedisBuckets):
                await buckets.aclose()

    app = service_app(
        SERVICE_NAME,
        readiness=readiness,
        telemetry=telemetry,
        routers=[public_router(Admission(verifier, buckets, table), upstreams, edge)],
        lifespan=lifespan,
        description="Lantern's public API. Every /api request needs a bearer JWT with the scopes named.",
        outer_middleware=[
            partial(
                TrustBoundary, trust_all=edge.trust_client_traceparent, trusted_cidrs=edge.trusted_trace_cidrs
            )
        ],
    )
    if edge.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=edge.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=EXPOSED_HEADERS,
        )
    # Added last, so outermost of the app's own middleware: even CORS answers get its headers.
    app.add_middleware(
        Edge,
        max_header_bytes=edge.max_header_bytes,
        request_timeout=edge.request_timeout,
        hsts_max_age=edge.hsts_max_age,
    )
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(base_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, GatewaySettings, create_app)
