"""Forwards public requests to an upstream service and relays its answer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx
from fastapi import Request, Response
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

# Only what the upstream needs, and hop-by-hop headers never; trace headers come from the span.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "idempotency-key", "x-request-id")
RELAYED_RESPONSE_HEADERS = ("content-type", "location", "retry-after")


def _pick(headers: httpx.Headers | Iterable[tuple[str, str]], names: tuple[str, ...]) -> dict[str, str]:
    return {name: value for name, value in dict(headers).items() if name.lower() in names}


class Upstream:
    def __init__(self, name: str, client: httpx.AsyncClient) -> None:
        self.name = name
        self._client = client

    async def forward(self, request: Request) -> Response:
        try:
            upstream = await self._client.request(
                request.method,
                request.url.path,
                params=request.query_params,
                content=await request.body(),
                headers=_pick(request.headers, FORWARDED_REQUEST_HEADERS),
            )
        except httpx.TimeoutException:
            logger.warning("upstream timed out", extra={"upstream": self.name})
            return _unavailable(504, f"{self.name} did not answer in time")
        except httpx.TransportError as error:
            logger.warning("upstream unreachable", extra={"upstream": self.name, "error": str(error)})
            return _unavailable(503, f"{self.name} is unreachable")
        return Response(
            content=upstream.content,
            status_code=upstream.status_code,
            headers=_pick(upstream.headers, RELAYED_RESPONSE_HEADERS),
        )


def _unavailable(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers={"Retry-After": "1"})
