"""The public routes: everything under /api/orders goes to the orders service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from gateway.proxy import forward

if TYPE_CHECKING:
    from lantern_runtime.resilience import UpstreamClient


def public_router(orders: UpstreamClient) -> APIRouter:
    router = APIRouter(tags=["orders"])

    @router.api_route("/api/orders", methods=["POST", "GET"], include_in_schema=False)
    @router.api_route("/api/orders/{rest:path}", methods=["GET"], include_in_schema=False)
    async def to_orders(request: Request) -> Response:
        return await forward(orders, request)

    return router
