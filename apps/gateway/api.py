"""The public routes: the documented order API, and every other route of the table, each
admitted (token, rate, scopes) and then forwarded to its upstream."""

# No `from __future__ import annotations`: FastAPI must see the `Admit` alias made per router.
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from gateway.admission import Admission, Admitted
from gateway.proxy import forward
from gateway.public import PLACE_ORDER_EXTRA, UNAUTHENTICATED, UNAVAILABLE, OrderAccepted, OrderView, problem
from gateway.settings import EdgeSettings
from lantern_runtime.resilience import UpstreamClient

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def public_router(
    admission: Admission, upstreams: dict[str, UpstreamClient], edge: EdgeSettings
) -> APIRouter:
    """`upstreams` has one client per route, by route prefix."""
    router = APIRouter()
    Admit = Annotated[Admitted, Depends(admission)]
    subject_secret = edge.subject_secret.get_secret_value() if edge.subject_secret else None

    async def relay(request: Request, admitted: Admitted) -> Response:
        response = await forward(
            upstreams[admitted.route.prefix],
            request,
            admitted.principal,
            max_body_bytes=edge.max_body_bytes,
            max_json_depth=edge.max_json_depth,
            subject_secret=subject_secret,
        )
        response.headers.update(admitted.rate.headers())
        return response

    @router.post(
        "/api/orders",
        tags=["orders"],
        summary="Place an order",
        description=(
            "Needs scope `orders:write`. The order is the caller's (the token's subject): a "
            "`customer_id` in the body, if sent, must be that subject (403 otherwise). The same "
            "Idempotency-Key again from the same caller returns the same order; each caller's keys "
            "are its own."
        ),
        status_code=202,
        response_model=OrderAccepted,
        responses={
            **UNAUTHENTICATED,
            403: problem("the token lacks orders:write, or the body's customer_id is not its subject"),
            400: problem("the JSON body nests too deeply"),
            409: problem("the Idempotency-Key was used with a different body"),
            413: problem("the body is too large"),
            422: problem("the order is not valid; `errors` names each field"),
            **UNAVAILABLE,
        },
        openapi_extra=PLACE_ORDER_EXTRA,
    )
    async def place_order(request: Request, admitted: Admit) -> Response:
        return await relay(request, admitted)

    @router.get(
        "/api/orders/{order_id}",
        tags=["orders"],
        summary="Read an order",
        description=(
            "Needs scope `orders:read`. Pending until paid, then confirmed or cancelled. Another "
            "caller's order is 404, as a missing one."
        ),
        response_model=OrderView,
        responses={
            **UNAUTHENTICATED,
            404: problem("no such order of the caller's"),
            422: problem("bad order id"),
            **UNAVAILABLE,
        },
    )
    async def get_order(
        request: Request, admitted: Admit, order_id: Annotated[str, Path(min_length=1, max_length=200)]
    ) -> Response:
        return await relay(request, admitted)

    @router.api_route("/{path:path}", methods=ALL_METHODS, include_in_schema=False)
    async def by_route_table(request: Request, admitted: Admit) -> Response:
        return await relay(request, admitted)

    return router
