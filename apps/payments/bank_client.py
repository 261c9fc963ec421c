"""The bank's authorization API, seen from payments."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from lantern_runtime.resilience import UpstreamError

if TYPE_CHECKING:
    from lantern_runtime.resilience import UpstreamClient


class BankUnavailable(Exception):
    """The bank gave no answer this time; asking again later is safe."""


@dataclass(frozen=True)
class Authorization:
    authorization_id: str
    status: str  # approved, declined or voided
    reason: str | None


class Bank(ABC):
    """The bank as payments' handlers see it: the port their fakes subclass."""

    @abstractmethod
    async def authorize(self, order_id: str, amount: Decimal) -> Authorization:
        """Raises BankUnavailable when the bank gave no answer."""

    @abstractmethod
    async def void(self, order_id: str) -> None:
        """Raises BankUnavailable when the bank gave no answer."""


class BankClient(Bank):
    """Every call carries the order id as the bank's idempotency key, so asking twice never
    charges twice, and the client may retry it."""

    def __init__(self, upstream: UpstreamClient) -> None:
        self._upstream = upstream

    async def authorize(self, order_id: str, amount: Decimal) -> Authorization:
        body = await self._post("/authorizations", order_id, {"order_id": order_id, "amount": str(amount)})
        return Authorization(body["authorization_id"], body["status"], body.get("reason"))

    async def void(self, order_id: str) -> None:
        await self._post("/authorizations/void", order_id, {"order_id": order_id})

    async def _post(self, path: str, order_id: str, payload: dict[str, str]) -> Any:
        try:
            response = await self._upstream.request(
                "POST", path, json=payload, headers={"Idempotency-Key": order_id}
            )
        except UpstreamError as error:
            raise BankUnavailable(str(error)) from error
        response.raise_for_status()
        return response.json()
