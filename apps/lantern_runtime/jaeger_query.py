"""A client of the subset of Jaeger's HTTP query API that Lantern's tools read.

`GET /api/traces/{id}`, `GET /api/traces?service=&tags=&limit=&lookback=` and `GET /api/services`,
answered in Jaeger's JSON (`{"data": [...], "errors": ...}`) by Jaeger itself and by the dev
stack's trace sink, so `lantern trace`, `lantern smoke` and `helm test` take one code path on a
laptop, on kind and in staging.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, Self

import httpx

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

__all__ = ["JaegerQuery", "QueryUnreachable", "TraceNotFound", "lookback_seconds"]

_LOOKBACK = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def lookback_seconds(lookback: str) -> int:
    """Seconds in a lookback such as 90s, 15m, 1h or 2d (the Jaeger UI's notation)."""
    match = _LOOKBACK.match(lookback)
    if match is None:
        raise ValueError(f"lookback {lookback!r} is not like 90s, 15m, 1h or 2d")
    return int(match[1]) * _SECONDS[match[2]]


class TraceNotFound(LookupError):
    """The query API does not know the trace (yet)."""


class QueryUnreachable(ConnectionError):
    """Nothing answers the query API at the address, or it answers with an error."""


class JaegerQuery:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> httpx.Response:
        try:
            return self._http.get(path, params=params)
        except httpx.TransportError as error:
            raise QueryUnreachable(
                f"the trace query API at {self.base_url} is unreachable ({type(error).__name__}: {error})"
            ) from error

    @staticmethod
    def _document(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200 or not isinstance(document, dict):
            raise QueryUnreachable(
                f"the trace query API answered {response.status_code} to {what}: {response.text[:200]}"
            )
        return document

    def trace(self, trace_id: str) -> dict[str, Any]:
        """Jaeger's document for one trace; TraceNotFound when it has no spans of it."""
        response = self._get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            raise TraceNotFound(f"no trace {trace_id} in the trace query API at {self.base_url}")
        document = self._document(response, f"trace {trace_id}")
        if not document.get("data"):
            raise TraceNotFound(f"no trace {trace_id} in the trace query API at {self.base_url}")
        return document

    def find(
        self,
        service: str,
        *,
        tags: Mapping[str, str] | None = None,
        limit: int = 20,
        lookback: str | None = None,
    ) -> dict[str, Any]:
        """Jaeger's document of the latest traces with a span of `service` carrying all `tags`,
        started within `lookback` (Jaeger's own default window when None)."""
        params: dict[str, str | int] = {"service": service, "limit": limit}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        if lookback:
            # Jaeger's API reads start and end (µs); lookback is the UI's, kept for readers of logs.
            end_us = time.time_ns() // 1000
            params |= {
                "lookback": lookback,
                "start": end_us - lookback_seconds(lookback) * 1_000_000,
                "end": end_us,
            }
        return self._document(self._get("/api/traces", params), f"a search in {service}")

    def services(self) -> list[str]:
        data = self._document(self._get("/api/services"), "the list of services").get("data") or []
        return [str(name) for name in data]
