"""Forwards an admitted request to its upstream service and relays the answer unchanged."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httpx
from fastapi import Response

from gateway.edge import REQUEST_ID_HEADER
from lantern_runtime.problems import Problem
from lantern_runtime.resilience import UpstreamError, UpstreamTimeout
from lantern_runtime.subject import SUBJECT_HEADER, SignedSubject, encode_subject

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fastapi import Request

    from gateway.auth import Principal
    from lantern_runtime.resilience import UpstreamClient

logger = logging.getLogger(__name__)

# Only what the upstream needs, and hop-by-hop headers never; trace headers come from the span.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "idempotency-key")
# Content-Type included, so a service's problem+json reaches the client as it was sent.
RELAYED_RESPONSE_HEADERS = ("content-type", "location", "retry-after")
# Every byte but a bracket is dropped by the depth scan; braces count as brackets.
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_OPEN = ord("[")
# Bodies larger than this are scanned in a worker thread, so the event loop keeps serving.
SCAN_IN_THREAD_BYTES = 64 * 1024


def _pick(headers: httpx.Headers | Iterable[tuple[str, str]], names: tuple[str, ...]) -> dict[str, str]:
    return {name: value for name, value in dict(headers).items() if name.lower() in names}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes, whatever Content-Length said."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the body exceeds {limit} bytes", title="Content Too Large")


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON: type/subtype compared case-insensitively, parameters
    ignored; `json` or any `+json` suffix (application/problem+json, application/vnd.x+json).
    No Content-Type counts too: some parsers (FastAPI with strict_content_type off) read JSON."""
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    _, slash, subtype = media_type.partition("/")
    return bool(slash) and (subtype == "json" or subtype.endswith("+json"))


def json_depth(body: bytes, limit: int | None = None) -> int:
    """How deeply arrays and objects nest; brackets inside strings do not count.

    Linear in the body's length whatever it holds: each step is one pass, and the passes
    before the loop run at C speed. Past `limit` it stops and returns a depth over it.
    A JSON parser agrees with this up to the first syntax error, where it stops anyway.
    """
    # Escapes first: each pair of backslashes is one literal backslash, then an escaped quote
    # is not a quote. No backslash is left next to another, so no new escape appears.
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Between quotes is inside a string: every other piece is outside. The tail after an
    # unterminated string's opening quote is dropped, as a parser never reads it as structure.
    if b'"' in text:
        text = b"".join(text.replace(b'""', b"").split(b'"')[::2])
    depth = deepest = 0
    for byte in text.translate(_BRACES_AS_BRACKETS, _NOT_BRACKETS):
        if byte == _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


async def nests_deeper_than(body: bytes, limit: int) -> bool:
    if len(body) > SCAN_IN_THREAD_BYTES:
        return await asyncio.to_thread(json_depth, body, limit) > limit
    return json_depth(body, limit) > limit


async def forward(
    upstream: UpstreamClient,
    request: Request,
    principal: Principal,
    *,
    max_body_bytes: int,
    max_json_depth: int,
    subject_secret: str | None,
) -> Response:
    """Relay the request; 503 (504 on a timeout) with Retry-After when no answer comes."""
    body = await read_body(request, max_body_bytes)
    if is_json(request.headers.get("content-type")) and await nests_deeper_than(body, max_json_depth):
        raise Problem(400, f"the JSON body nests deeper than {max_json_depth} levels")
    headers = _pick(request.headers.items(), FORWARDED_REQUEST_HEADERS)
    headers[REQUEST_ID_HEADER] = request.state.request_id
    # Signed per attempt (a retry gets a fresh timestamp) over the method and path httpx sends,
    # for the route's service only. Without a key it goes unsigned: no service trusts that.
    signed = None
    if subject_secret:
        signed = SignedSubject(subject_secret, principal.subject, service=upstream.name)
    else:
        headers[SUBJECT_HEADER] = encode_subject(principal.subject)
    # The path and query as the client encoded them: decoding and re-encoding could change them.
    target = request.scope["raw_path"].decode("latin-1")
    if request.scope["query_string"]:
        target += "?" + request.scope["query_string"].decode("latin-1")
    try:
        answer = await upstream.request(request.method, target, content=body, headers=headers, auth=signed)
    except httpx.InvalidURL as error:
        raise Problem(400, f"the request target cannot be forwarded: {error}") from error
    except UpstreamError as error:
        status = 504 if isinstance(error, UpstreamTimeout) else 503
        logger.warning("upstream failed", extra={"upstream": error.upstream, "reason": error.detail})
        raise Problem(
            status,
            f"{error.upstream} is unavailable: {error.detail}",
            headers={"Retry-After": str(max(1, round(error.retry_after)))},
        ) from error
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        headers=_pick(answer.headers, RELAYED_RESPONSE_HEADERS),
    )
