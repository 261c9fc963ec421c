"""HTTP: place an order (202, idempotent by key) and read it back, each for the caller only.

The caller is the subject the gateway signed (lantern_runtime.subject); without one, 401. The
order belongs to that customer: a body's customer_id may only repeat it (403 otherwise; there
is no admin override), another customer's order is 404 as if it did not exist, and each
customer's Idempotency-Keys are its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Response, status
from fastapi.responses import JSONResponse
from opentelemetry import trace

from lantern_runtime.problems import Problem
from lantern_runtime.subject import required_subject
from orders.domain import MAX_CUSTOMER_ID, PlaceOrder
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
        description="Unique per order of a customer; a retry with the same key returns the same order.",
    ),
]
Customer = Annotated[str, Depends(required_subject)]


def orders_router(repository: OrderRepository, relay: OutboxRelay) -> APIRouter:
    router = APIRouter(prefix="/api/orders", tags=["orders"])

    @router.post("", status_code=status.HTTP_202_ACCEPTED)
    async def place_order(
        command: PlaceOrder, idempotency_key: IdempotencyKey, response: Response, customer: Customer
    ) -> dict[str, Any]:
        if len(customer) > MAX_CUSTOMER_ID:
            raise Problem(
                403,
                f"the authenticated subject is {len(customer)} characters long; "
                f"a customer id has at most {MAX_CUSTOMER_ID}",
            )
        if command.customer_id is not None and command.customer_id != customer:
            raise Problem(
                403,
                f"customer_id {command.customer_id!r} is not the authenticated subject {customer!r}: "
                "orders are placed for the caller only; leave customer_id out",
            )
        try:
            order, created = await repository.place(customer, command, idempotency_key)
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
    async def get_order(order_id: str, customer: Customer) -> JSONResponse:
        # Another customer's order answers exactly as a missing one: its id tells nothing.
        order = await repository.get(order_id, customer_id=customer)
        if order is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"order {order_id!r} not found")
        return JSONResponse(order.as_json())

    return router
