"""Whatever method a client sends, the server spans and HTTP metrics (the FastAPI
instrumentation's) name only the known methods or `_OTHER` (span name `HTTP`), the original kept
on the span alone, as the HTTP semantic conventions say: the metric labels stay bounded."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from tests.unit.test_server_spans import Recorded

# The methods the instrumentation knows (RFC 9110, PATCH and QUERY).
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
# RFC 9110 token characters: any of them is a method a client can send. Upper case only, as
# httpx upper-cases methods; the raw-socket test at the gateway sends lower case too.
METHODS = st.from_regex(r"[A-Z0-9!#$%&'*+.^_`|~-]{1,24}", fullmatch=True) | st.sampled_from(
    sorted({"GET", "POST", "PATCH", "QUERY", "PURGE"})
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(methods=st.lists(METHODS, min_size=1, max_size=5))
async def test_random_methods_make_bounded_span_names_and_metric_labels(methods: list[str]) -> None:
    recorded = Recorded()
    router = APIRouter()

    @router.api_route("/api/items/{item_id}", methods=["GET", "POST"])
    async def item(item_id: str) -> dict[str, str]:
        return {"item_id": item_id}

    app = service_app("orders", readiness=Readiness({}), telemetry=recorded.telemetry, routers=[router])
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders:8000") as client:
        for method in methods:
            await client.request(method, "/api/items/i-1")
    spans = recorded.spans.get_finished_spans()
    assert len(spans) == len(methods)
    for method, span in zip(methods, spans, strict=True):
        attributes = dict(span.attributes or {})
        if method in KNOWN_METHODS:
            assert span.name.split()[0] == method
            assert attributes["http.request.method"] == method
            assert "http.request.method_original" not in attributes
        else:
            assert span.name.split()[0] == "HTTP"
            assert attributes["http.request.method"] == "_OTHER"
            assert attributes["http.request.method_original"] == method
    labels = {point["http.request.method"] for point in recorded.durations()}
    assert labels <= KNOWN_METHODS | {"_OTHER"}
    assert not any("http.request.method_original" in point for point in recorded.durations())
