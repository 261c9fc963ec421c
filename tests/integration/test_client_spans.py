"""Each attempt of an upstream call is a CLIENT span of the httpx instrumentation in the caller's
trace, with the upstream's name, the breaker's state and the resend count added by Lantern's hook,
and carries its own context to the upstream."""

from __future__ import annotations

import contextlib

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from lantern_runtime.resilience import UpstreamUnavailable
from tests.unit.test_resilience import Upstream, client, reset, upstream  # noqa: F401 - fixtures


async def test_each_attempt_is_a_client_span_with_its_resend_count_and_its_own_context(
    upstream: Upstream,  # noqa: F811 - the fixture
    spans: InMemorySpanExporter,
) -> None:
    upstream.statuses = [503]
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        response = await client(upstream.url).request("GET", "/orders/o-1")
    assert response.status_code == 200
    attempts = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    port = int(upstream.url.rsplit(":", 1)[1])
    common = {
        "http.request.method": "GET",
        "url.full": f"{upstream.url}/orders/o-1",
        "server.address": "127.0.0.1",
        "server.port": port,
        "network.peer.address": "127.0.0.1",
        "network.peer.port": port,
        "network.protocol.version": "1.1",
        "lantern.upstream.name": "orders",
        "lantern.circuit_breaker.state": "closed",
    }
    assert [dict(s.attributes or {}) for s in attempts] == [
        {**common, "http.response.status_code": 503, "error.type": "503"},
        {**common, "http.request.resend_count": 1, "http.response.status_code": 200},
    ]
    assert {s.instrumentation_scope.name for s in attempts if s.instrumentation_scope} == {
        "opentelemetry.instrumentation.httpx"
    }
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert all(
        s.parent is not None and s.parent.span_id == caller.get_span_context().span_id for s in attempts
    )
    trace_id = f"{caller.get_span_context().trace_id:032x}"
    assert [call["traceparent"] for call in upstream.calls] == [
        f"00-{trace_id}-{s.context.span_id:016x}-{s.context.trace_flags:02x}" for s in attempts
    ]


async def test_an_unreachable_upstream_is_an_error_span_naming_the_failure(
    spans: InMemorySpanExporter,
) -> None:
    with contextlib.suppress(UpstreamUnavailable):
        await client("http://127.0.0.1:9", max_attempts=1).request("GET", "/x")
    [attempt] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes is not None
    assert attempt.attributes["error.type"] == "ConnectError"
    assert [event.name for event in attempt.events] == ["exception"]
