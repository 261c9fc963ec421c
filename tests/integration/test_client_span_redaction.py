"""A client span's url.full is scheme://host:port/path: the query string (tokens, personal
data) and any user info (credentials) never reach a trace; an unknown method is `_OTHER`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from opentelemetry.trace import SpanKind

from lantern_runtime.telemetry.libraries import redacted
from tests.unit.test_resilience import Upstream, client, reset, upstream  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


async def test_the_query_string_and_user_info_are_not_recorded_in_url_full(
    upstream: Upstream,  # noqa: F811 - the fixture
    spans: InMemorySpanExporter,
) -> None:
    with_credentials = upstream.url.replace("http://", "http://ops:s3cret@")
    response = await client(with_credentials).request(
        "GET", "/orders/o-1?card=4111111111111111&token=abc#frag"
    )
    assert response.status_code == 200
    [attempt] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    attributes = dict(attempt.attributes or {})
    assert attributes["url.full"] == f"{upstream.url}/orders/o-1"
    recorded = " ".join(str(value) for value in attributes.values())
    for secret in ("4111111111111111", "token=abc", "s3cret", "ops:", "frag"):
        assert secret not in recorded


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://orders:8001/api/orders/o-1?x=1", "http://orders:8001/api/orders/o-1"),
        ("https://user:pass@bank.internal:8443/authorize?card=1", "https://bank.internal:8443/authorize"),
        ("http://user@[::1]:8080/a/b#c", "http://[::1]:8080/a/b"),
        ("http://p%40ss:w%3Ard@host/x", "http://host/x"),
        ("http://orders:8001/", "http://orders:8001/"),
        ("http://orders:8001/a%2Fb?", "http://orders:8001/a%2Fb"),
    ],
)
def test_redacted_keeps_scheme_host_port_and_path_only(url: str, expected: str) -> None:
    assert redacted(url) == expected


async def test_an_unknown_method_is_other_on_the_client_span(
    upstream: Upstream,  # noqa: F811 - the fixture
    spans: InMemorySpanExporter,
) -> None:
    await client(upstream.url, max_attempts=1).request("BREW", "/x")
    [attempt] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert attempt.name == "HTTP"
    attributes = dict(attempt.attributes or {})
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "BREW"
