"""Paths and methods at the real gateway (uvicorn on a loopback port, raw request targets):
an empty path segment is a 400 problem before any routing, and an unknown method does not
become a span name or a metric label."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI, Request
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.loopback import serving
from gateway.auth import issue_token
from gateway.bootstrap import create_app
from gateway.settings import EdgeSettings, GatewaySettings
from lantern_runtime.telemetry import Telemetry
from tests.metric_points import point_attributes

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "p" * 48
TOKEN = issue_token(SECRET, subject="alice", scopes=["orders:read", "orders:write"])


def upstream_app() -> FastAPI:
    app = FastAPI()
    app.state.seen = []

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request) -> dict[str, Any]:
        app.state.seen.append(request.scope["raw_path"].decode())
        return {"path": path}

    return app


class Gateway:
    def __init__(self, port: int, spans: InMemorySpanExporter, metrics: InMemoryMetricReader) -> None:
        self.port = port
        self.spans = spans
        self.metrics = metrics

    def request(self, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP/1.1 request, the target sent byte for byte as given."""
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(head.encode("latin-1"))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        raw_headers, _, body = rest.partition(b"\r\n\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (
                line.decode("latin-1").partition(":") for line in raw_headers.split(b"\r\n")
            )
        }
        return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def upstream() -> Iterator[FastAPI]:
    app = upstream_app()
    with serving(app) as url:
        app.state.url = url
        yield app


@pytest.fixture(scope="module")
def gateway(upstream: FastAPI) -> Iterator[Gateway]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    telemetry = Telemetry(
        "gateway", tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[metrics])
    )
    settings = GatewaySettings(
        orders_url=upstream.state.url, edge=EdgeSettings(jwt_secret=SECRET, rate_limit=10_000)
    )
    app, _ = create_app(settings, telemetry)
    with serving(app) as url:
        yield Gateway(int(url.rsplit(":", 1)[1]), spans, metrics)


@pytest.mark.parametrize(
    "target",
    [
        "/api//orders",
        "/api/orders//o-1",
        "/api/orders/o-1//",
        "/api/orders//",
        "//api/orders",
        "/api/orders/%2F",
        "/api/orders%2F%2Fo-1",
        "/api/orders/%2f/o-1",
        "/api/orders//o-1?x=1",
    ],
)
def test_an_empty_path_segment_is_a_400_problem_and_never_forwarded(
    gateway: Gateway, upstream: FastAPI, target: str
) -> None:
    before = len(upstream.state.seen)
    status, headers, body = gateway.request("GET", target)
    assert status == 400, body
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 400 and "empty segment" in problem["detail"]
    assert len(upstream.state.seen) == before


@pytest.mark.parametrize("target", ["/api/orders/o-1", "/api/orders/o-1/", "/api/orders/a%2Fb"])
def test_paths_without_empty_segments_still_go_through(
    gateway: Gateway, upstream: FastAPI, target: str
) -> None:
    status, _, body = gateway.request("GET", target)
    assert status == 200, body
    assert upstream.state.seen[-1] == target


def method_points(metrics: InMemoryMetricReader) -> list[dict[str, Any]]:
    return point_attributes(metrics, "http.server.request.duration")


def test_unknown_methods_are_other_in_span_names_and_metrics_with_the_original_on_the_span(
    gateway: Gateway,
) -> None:
    gateway.spans.clear()
    # (A lower-case `get` is not among them: the FastAPI instrumentation upper-cases a method
    # before it compares, so it names that one GET, a known method, and the labels stay bounded.)
    methods = [f"X{token}" for token in ("FROB", "get", "Q1W2E3", "PURGE", "BREW")]
    for method in methods:
        status, _, _ = gateway.request(method, "/api/orders/o-1")
        assert status in (400, 405), method
    known, _, _ = gateway.request("GET", "/api/orders/o-1")
    assert known == 200
    servers = [s for s in gateway.spans.get_finished_spans() if s.kind.name == "SERVER"]
    unknown = servers[: len(methods)]
    assert {s.name.split()[0] for s in unknown} == {"HTTP"}
    assert [dict(s.attributes or {})["http.request.method"] for s in unknown] == ["_OTHER"] * len(methods)
    assert [dict(s.attributes or {})["http.request.method_original"] for s in unknown] == methods
    assert servers[-1].name.startswith("GET ")
    assert "http.request.method_original" not in (servers[-1].attributes or {})
    labels = method_points(gateway.metrics)
    assert {point["http.request.method"] for point in labels} <= {"_OTHER", "GET"}
    assert not any("http.request.method_original" in point for point in labels)
