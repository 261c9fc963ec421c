"""Every service started under `opentelemetry-instrument` (zero-code instrumentation, the SDK
configured by opentelemetry-distro from OTEL_* alone) works, and nothing is traced twice: Lantern
takes the providers the distro built, and each library is instrumented once."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import DEFAULT_PORTS, Stack
from devstack.tracesink import traces_by_id
from lantern_runtime.trace_contract import check_trace, order_flow_chain, render_tree

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lantern_runtime.trace_contract import Span

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

INSTRUMENT = str(Path(sys.executable).with_name("opentelemetry-instrument"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_vhost("lantern-zero-code") as amqp_url:
        platform = Stack(
            tmp_path_factory.mktemp("platform"),
            ports={service: free_port() for service in DEFAULT_PORTS},
            amqp_url=amqp_url,
            sink_port=free_port(),
            # What the distro reads: it exports all three signals over OTLP/HTTP to the sink.
            extra_env={
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
                "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz$,readyz$",
            },
            service_env={s: {"OTEL_RESOURCE_ATTRIBUTES": f"service.name={s}"} for s in DEFAULT_PORTS},
            launchers={service: [INSTRUMENT] for service in DEFAULT_PORTS},
        )
        with platform.running(timeout=60):
            yield platform


def nested_twins(spans: list[Span]) -> list[str]:
    """Spans whose parent is a span of the same service, kind and name: what a library
    instrumented twice makes (a second wrapper around the first)."""
    by_id = {span.span_id: span for span in spans}
    twins = []
    for span in spans:
        parent = by_id.get(span.parent_span_id or "")
        if parent and (parent.service, parent.kind, parent.name) == (span.service, span.kind, span.name):
            twins.append(f"{span.service}: {span.name} [{span.kind}]")
    return twins


def test_an_order_under_zero_code_instrumentation_is_one_trace_with_no_span_made_twice(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url("gateway"), timeout=10, headers=stack.auth_headers()) as gateway:
        response = gateway.post(
            "/api/orders",
            json={"items": [{"sku": "lamp", "quantity": 1, "unit_price": "9.90"}]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 202, response.text
        trace_id = response.headers["traceresponse"].split("-")[1]
        deadline = time.monotonic() + 20
        while True:
            spans = traces_by_id(stack.spans_file).get(trace_id, [])
            problems = check_trace(spans, order_flow_chain("authorized"))
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert problems == [], render_tree(spans)
    assert nested_twins(spans) == [], render_tree(spans)
    posts = [s for s in spans if s.service == "orders" and s.kind == "server"]
    assert [s.name for s in posts] == ["POST /api/orders"], render_tree(spans)
    # The distro's resource, not Lantern's: the SDK was configured by opentelemetry-instrument.
    assert {s.resource.get("telemetry.auto.version") for s in spans} != {None}
    assert {s.resource.get("service.name") for s in spans} == set(DEFAULT_PORTS)
    # One SQLAlchemy span per statement, whichever instrumented it.
    sql = [s for s in spans if s.scope == "opentelemetry.instrumentation.sqlalchemy"]
    assert sql, render_tree(spans)
