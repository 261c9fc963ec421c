"""ASGI middleware at the edge: what every request and answer goes through, routed or not."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from starlette.datastructures import MutableHeaders

from lantern_runtime.problems import problem_response
from lantern_runtime.subject import SIGNATURE_HEADER, SUBJECT_HEADER

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Trace context a client may not choose unless it is trusted to continue its own trace.
TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
# Headers only the gateway may set towards the services.
INTERNAL_HEADERS = frozenset({SUBJECT_HEADER.lower().encode(), SIGNATURE_HEADER.lower().encode()})
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("lantern_request_id", default=None)


class TrustBoundary:
    """Runs outside the OpenTelemetry middleware: drops a client's trace context before it could
    be extracted (unless the client is trusted), and any copy of the gateway's internal headers."""

    def __init__(self, app: ASGIApp, *, trust_all: bool = False, trusted_cidrs: Iterable[str] = ()) -> None:
        self.app = app
        self.trust_all = trust_all
        self.trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted_cidrs]

    def _trusts(self, client: tuple[str, int] | None) -> bool:
        if self.trust_all:
            return True
        if not self.trusted or client is None:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            dropped = (
                INTERNAL_HEADERS if self._trusts(scope.get("client")) else INTERNAL_HEADERS | TRACE_HEADERS
            )
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in dropped]}
        await self.app(scope, receive, send)


def _valid_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


class Edge:
    """Inside the server span: request ids, security headers, the header-size cap and the
    per-request timeout, for every answer the gateway gives."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        request_timeout: float,
        hsts_max_age: int = 0,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.request_timeout = request_timeout
        self.security_headers = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer",
        }
        if hsts_max_age:
            self.security_headers["Strict-Transport-Security"] = f"max-age={hsts_max_age}; includeSubDomains"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _valid_request_id(scope["headers"]) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        trace.get_current_span().set_attribute("lantern.request_id", request_id)
        token = request_id_var.set(request_id)
        api = scope["path"].startswith("/api")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in self.security_headers.items():
                    headers.setdefault(name, value)
                if api:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            if sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_header_bytes:
                await self._answer(
                    scope,
                    receive,
                    send_with_headers,
                    431,
                    f"the headers exceed {self.max_header_bytes} bytes",
                )
                return
            # The decoded path, so %2F that makes an empty segment is refused too. Upstreams
            # and routers disagree on `//` (merged, kept, or a different resource): none gets it.
            if "//" in scope["path"]:
                await self._answer(
                    scope,
                    receive,
                    send_with_headers,
                    400,
                    "the path has an empty segment ('//', or %2F next to a '/'); "
                    "every segment between slashes must have at least one character",
                )
                return
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self.app(scope, receive, send_with_headers)
            except TimeoutError:
                if started:
                    raise
                await self._answer(
                    scope, receive, send_with_headers, 504, f"no answer within {self.request_timeout:g}s"
                )
        finally:
            request_id_var.reset(token)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        response = problem_response(status, detail, instance=scope["path"])
        await response(scope, receive, send)


def add_request_id_to_logs() -> None:
    """Every log record written while a request is handled carries its `request_id`."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "adds_request_id", False):
        return

    def record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    record_with_request_id.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record_with_request_id)
