"""The bank's authorization API, seen from payments."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class BankUnavailable(Exception):
    """The bank did not give an answer this time; asking again later is safe."""


@dataclass(frozen=True)
class Authorization:
    authorization_id: str
    approved: bool
    reason: str | None


class BankClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def authorize(self, order_id: str, amount: Decimal) -> Authorization:
        """Authorize `amount` for the order; the order id is the bank's idempotency key,
        so asking twice never charges twice."""
        response = await self._http.post(
            "/authorizations",
            json={"order_id": order_id, "amount": str(amount)},
            headers={"Idempotency-Key": order_id},
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise BankUnavailable(f"bank answered {response.status_code} for order {order_id}")
        response.raise_for_status()
        body = response.json()
        return Authorization(
            authorization_id=body["authorization_id"],
            approved=body["status"] == "approved",
            reason=body.get("reason"),
        )
