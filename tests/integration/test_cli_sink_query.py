"""The dev stack's trace sink answers Jaeger's query API (the part `lantern trace`, `lantern smoke`
and the helm-test smoke read) over real HTTP, in the JSON that spans_from_jaeger_json parses."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack.loopback import serving
from devstack.tracesink import sink_app
from lantern_runtime.jaeger_query import JaegerQuery, TraceNotFound
from lantern_runtime.trace_formats import spans_from_jaeger_json

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TRACE = "5c4f5847cd8d1518bf8d79d7ac795202"
OTHER = "0af7651916cd43dd8448eb211c80319c"


def otlp_span(
    trace_id: str, span_id: str, parent: str | None, name: str, kind: int, offset_ms: int, **attributes: Any
) -> dict[str, Any]:
    start = time.time_ns() + offset_ms * 1_000_000
    return {
        "traceId": trace_id,
        "spanId": span_id,
        **({"parentSpanId": parent} if parent else {}),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 2_000_000),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
        "status": {"code": 2 if name.startswith("fail") else 0},
    }


def export(service: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": list(spans)}],
            }
        ]
    }


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[str]:
    with serving(sink_app(tmp_path / "spans.jsonl")) as url:
        batches = [
            export("gateway", otlp_span(TRACE, "a" * 16, None, "POST /api/orders", 2, 0)),
            export(
                "orders",
                otlp_span(
                    TRACE,
                    "b" * 16,
                    "a" * 16,
                    "publish order.created",
                    4,
                    1,
                    **{"messaging.message.id": "o-1:order.created"},
                ),
                otlp_span(TRACE, "c" * 16, "b" * 16, "fail here", 1, 2),
            ),
            export("orders", otlp_span(OTHER, "d" * 16, None, "GET /api/orders/{order_id}", 2, 5)),
        ]
        for batch in batches:
            assert httpx.post(f"{url}/v1/traces", json=batch).status_code == 200
        yield url


def test_one_trace_comes_back_in_jaegers_shape(sink: str) -> None:
    with JaegerQuery(sink) as query:
        document = query.trace(TRACE)
    [trace] = document["data"]
    assert {p["serviceName"] for p in trace["processes"].values()} == {"gateway", "orders"}
    spans = {span.name: span for span in spans_from_jaeger_json(document)}
    assert spans["POST /api/orders"].kind == "server" and spans["POST /api/orders"].parent_span_id is None
    assert spans["publish order.created"].parent_span_id == "a" * 16
    assert spans["publish order.created"].service == "orders"
    assert spans["publish order.created"].attributes["messaging.message.id"] == "o-1:order.created"
    assert spans["fail here"].error and spans["fail here"].kind == "internal"
    assert abs(spans["fail here"].duration_ms - 2.0) < 0.01


def test_an_unknown_trace_is_a_404_in_jaegers_envelope(sink: str) -> None:
    answer = httpx.get(f"{sink}/api/traces/{'0' * 32}")
    assert answer.status_code == 404
    assert answer.json()["errors"] == [{"code": 404, "msg": "trace not found"}]
    with JaegerQuery(sink) as query, pytest.raises(TraceNotFound):
        query.trace("0" * 32)


def test_search_by_service_and_tag_finds_the_trace_newest_first(sink: str) -> None:
    with JaegerQuery(sink) as query:
        tagged = query.find("orders", tags={"messaging.message.id": "o-1:order.created"})
        everything = query.find("orders", limit=20, lookback="1h")
        newest = query.find("orders", limit=1)
        assert [t["traceID"] for t in tagged["data"]] == [TRACE]
        assert [t["traceID"] for t in everything["data"]] == [OTHER, TRACE]
        assert [t["traceID"] for t in newest["data"]] == [OTHER]
        assert query.find("bank")["data"] == []
        assert query.services() == ["gateway", "orders"]
        # Jaeger's own window: start and end in µs since the epoch.
        future = {"service": "orders", "start": (time.time_ns() + 3_600_000_000_000) // 1000}
        assert httpx.get(f"{sink}/api/traces", params=future).json()["data"] == []
        past = {"service": "orders", "end": (time.time_ns() - 3_600_000_000_000) // 1000}
        assert httpx.get(f"{sink}/api/traces", params=past).json()["data"] == []


def test_search_needs_a_service_and_well_formed_tags(sink: str) -> None:
    assert httpx.get(f"{sink}/api/traces").status_code == 400
    bad = httpx.get(f"{sink}/api/traces", params={"service": "orders", "tags": "{not json"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == 400
    assert (
        httpx.get(f"{sink}/api/traces", params={"service": "orders", "lookback": "soon"}).status_code == 400
    )
    assert json.loads(httpx.get(f"{sink}/api/services").text)["total"] == 2
