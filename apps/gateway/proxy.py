"""Forwards public requests to an upstream service and relays its answer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from lantern_runtime.resilience import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from collections.abc import Iterable

    import httpx

    from lantern_runtime.resilience import UpstreamClient

logger = logging.getLogger(__name__)

# Only what the upstream needs, and hop-by-hop headers never; trace headers come from the span.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "idempotency-key", "x-request-id")
RELAYED_RESPONSE_HEADERS = ("content-type", "location", "retry-after")


def _pick(headers: httpx.Headers | Iterable[tuple[str, str]], names: tuple[str, ...]) -> dict[str, str]:
    return {name: value for name, value in dict(headers).items() if name.lower() in names}


async def forward(upstream: UpstreamClient, request: Request) -> Response:
    """Relay the request; answer 503 (504 on a timeout) with Retry-After when no answer comes."""
    try:
        answer = await upstream.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers=_pick(request.headers, FORWARDED_REQUEST_HEADERS),
        )
    except UpstreamError as error:
        status = 504 if isinstance(error, UpstreamTimeout) else 503
        logger.warning("upstream failed", extra={"upstream": error.upstream, "reason": error.detail})
        return JSONResponse(
            {"detail": f"{error.upstream} is unavailable: {error.detail}"},
            status_code=status,
            headers={"Retry-After": str(max(1, round(error.retry_after)))},
        )
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        headers=_pick(answer.headers, RELAYED_RESPONSE_HEADERS),
    )
