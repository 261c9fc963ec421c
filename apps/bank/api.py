"""POST /authorizations (idempotent by key, with injected faults), GET /authorizations (one
order's, at most `limit`) and GET /authorizations/requests (every call received about one
order, as it arrived)."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from bank.ledger import KeyReused
from lantern_runtime.listing import DEFAULT_LIMIT, Limit, OrderId

if TYPE_CHECKING:
    from bank.ledger import Ledger, RequestLog
    from bank.settings import BankSettings


class AuthorizationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=200)
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)


class VoidRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=200)


async def inject_faults(settings: BankSettings) -> None:
    """The configured latency, spikes and failures, before any state changes."""
    spike = random.random() < settings.bank_spike_rate
    latency_ms = settings.bank_spike_ms if spike else settings.bank_latency_ms
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    if random.random() < settings.bank_failure_rate:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="injected failure (BANK_FAILURE_RATE); retry with the same key",
        )


def bank_router(ledger: Ledger, settings: BankSettings, received: RequestLog) -> APIRouter:
    router = APIRouter(tags=["authorizations"])

    @router.post("/authorizations", status_code=status.HTTP_201_CREATED)
    async def authorize(
        request: AuthorizationRequest,
        response: Response,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1)],
    ) -> dict[str, Any]:
        received.record("authorize", idempotency_key, request.order_id, request.amount)
        await inject_faults(settings)
        try:
            record, created = ledger.authorize(idempotency_key, request.order_id, request.amount)
        except KeyReused as error:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
        if not created:
            response.status_code = status.HTTP_200_OK
        return record.as_json()

    @router.post("/authorizations/void")
    async def void(
        request: VoidRequest,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1)],
    ) -> dict[str, Any]:
        received.record("void", idempotency_key, request.order_id)
        await inject_faults(settings)
        try:
            return ledger.void(idempotency_key, request.order_id).as_json()
        except KeyReused as error:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error

    @router.get("/authorizations")
    async def list_authorizations(order_id: OrderId, limit: Limit = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        return [record.as_json() for record in ledger.for_order(order_id, limit=limit)]

    @router.get("/authorizations/requests")
    async def list_requests(order_id: OrderId, limit: Limit = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """Every authorize and void call received about one order, resends included."""
        return [request.as_json() for request in received.for_order(order_id, limit=limit)]

    return router
