"""HTTP: place an order (202, idempotent by key) and read it back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response, status
from fastapi.responses import JSONResponse
from opentelemetry import trace

from orders.domain import PlaceOrder
from orders.repository import IdempotencyConflict

if TYPE_CHECKING:
    from lantern_runtime.storage import OutboxRelay
    from orders.repository import OrderRepository

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Unique per order; a retry with the same key returns the same order.",
    ),
]


def orders_router(repository: OrderRepository, relay: OutboxRelay) -> APIRouter:
    router = APIRouter(prefix="/api/orders", tags=["orders"])

    @router.post("", status_code=status.HTTP_202_ACCEPTED)
    async def place_order(
        command: PlaceOrder, idempotency_key: IdempotencyKey, response: Response
    ) -> dict[str, Any]:
        try:
            order, created = await repository.place(command, idempotency_key)
        except IdempotencyConflict as conflict:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(conflict)) from conflict
        span = trace.get_current_span()
        span.set_attribute("lantern.order_id", order.id)
        span.set_attribute("lantern.idempotent_replay", not created)
        if created:
            relay.wake()
        response.headers["Location"] = f"/api/orders/{order.id}"
        return {"order_id": order.id, "status": order.status.value}

    @router.get("/{order_id}")
    async def get_order(order_id: str) -> JSONResponse:
        order = await repository.get(order_id)
        if order is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"order {order_id!r} not found")
        return JSONResponse(order.as_json())

    return router
