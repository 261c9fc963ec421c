"""The route table: which path prefix goes to which upstream service, how it is called, and
which scopes each method needs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from lantern_runtime.resilience import UpstreamPolicy

if TYPE_CHECKING:
    from pathlib import Path


class Route(BaseModel):
    """`prefix` matches itself and whatever follows a `/` after it; the path goes on unchanged."""

    prefix: str = Field(pattern=r"^/[A-Za-z0-9._~/-]*$")
    service: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", description="Kubernetes Service name")
    port: int = Field(default=80, ge=1, le=65535)
    upstream: UpstreamPolicy = UpstreamPolicy()
    # Method -> the scopes a token needs (all of them); a method not listed is 405.
    scopes: dict[str, list[str]]

    @field_validator("scopes")
    @classmethod
    def _upper_methods(cls, scopes: dict[str, list[str]]) -> dict[str, list[str]]:
        return {method.upper(): needed for method, needed in scopes.items()}

    def matches(self, path: str) -> bool:
        prefix = self.prefix.rstrip("/")
        return path == prefix or path.startswith(prefix + "/")


ROUTES = TypeAdapter(list[Route])


def default_routes(orders_policy: UpstreamPolicy) -> list[Route]:
    return [
        Route(
            prefix="/api/orders",
            service="orders",
            port=8001,
            upstream=orders_policy,
            scopes={"POST": ["orders:write"], "GET": ["orders:read"]},
        )
    ]


def routes_from_file(path: Path) -> list[Route]:
    """A JSON list of routes, e.g. a mounted ConfigMap."""
    try:
        return ROUTES.validate_python(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        raise ValueError(f"GATEWAY_ROUTES_FILE={path} is not a readable JSON route list: {error}") from error


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        if not routes:
            raise ValueError("the route table is empty; set GATEWAY_ROUTES or leave it unset for the default")
        # The longest prefix wins, so /api/orders/admin can go elsewhere than /api/orders.
        self.routes = sorted(routes, key=lambda route: len(route.prefix), reverse=True)

    def match(self, path: str) -> Route | None:
        # Dot segments could step outside the matched prefix once an upstream normalises them.
        if any(segment in {".", ".."} for segment in path.split("/")):
            return None
        return next((route for route in self.routes if route.matches(path)), None)
