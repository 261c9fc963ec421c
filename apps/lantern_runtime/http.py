"""Outbound HTTP to other services: one pooled, traced client per upstream, always with timeouts."""

from __future__ import annotations

import httpx


def service_client(base_url: str, *, timeout: float = 5.0, connect_timeout: float = 2.0) -> httpx.AsyncClient:
    """A client for one upstream. Connections are reused; no call can wait forever.

    httpx is instrumented globally by setup_telemetry, so each request gets a client span
    and carries the trace context to the upstream.
    """
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )
