"""Every per-call structure of the runtime is bounded: a service runs for months, so what grows a
little on each call, each client or each message must level off. Each bound is shown with a fake
clock, over far more calls than one window holds."""

from __future__ import annotations

import gc
import threading
import tracemalloc
import weakref
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext

from lantern_runtime.resilience import CircuitBreaker, RetryBudget, UpstreamClient
from tests.unit.clock import Clock

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan


def allocated_by(run: object) -> int:
    """Bytes still held after `run()` returns, as tracemalloc counts them."""
    assert callable(run)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_retry_budget_holds_constant_memory_with_a_healthy_upstream() -> None:
    # A healthy upstream: calls and never a retry, so nothing but the calls could prune it.
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_retries=10, window=10.0, clock=clock)

    def calls(count: int) -> None:
        for _ in range(count):
            clock.now += 0.01
            budget.record_call()

    calls(10_000)  # the first window fills whatever the budget keeps
    grown = allocated_by(lambda: calls(200_000))  # twenty more windows
    assert grown < 4_000, f"the budget grew by {grown} bytes over 200,000 calls"


def test_the_retry_budget_still_allows_a_fraction_of_the_calls_in_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_retries=10, window=10.0, clock=clock)
    for _ in range(1_000):  # 1,000 calls over the last 10 s
        clock.now += 0.01
        budget.record_call()
    assert sum(budget.try_spend() for _ in range(500)) == 200
    clock.now += 30  # every call has aged out: only the floor remains
    assert sum(budget.try_spend() for _ in range(500)) == 10
    clock.now += 30
    for _ in range(100):
        budget.record_call()
    assert sum(budget.try_spend() for _ in range(500)) == 20  # max(10, 20% of 100)


def test_a_breaker_is_one_per_upstream_and_is_freed_with_its_client() -> None:
    # A breaker holds a few numbers whatever the traffic: many failures and successes add nothing.
    clock = Clock()
    breaker = CircuitBreaker("bank", failure_threshold=5, reset_timeout=5.0, clock=clock)

    def traffic() -> None:
        for i in range(50_000):
            clock.now += 0.01
            if i % 7 == 0:
                breaker.record_failure()
            else:
                breaker.allow()
                breaker.record_success()

    traffic()
    assert allocated_by(traffic) < 2_000
    # The metrics registry of breakers holds them weakly: a client that goes frees its breaker.
    client = UpstreamClient("short-lived", "http://127.0.0.1:9")
    freed = weakref.ref(client.breaker)
    del client
    gc.collect()
    assert freed() is None


def test_a_long_lived_span_keeps_only_the_newest_events_and_links_up_to_the_limits() -> None:
    provider = TracerProvider(span_limits=SpanLimits(max_events=128, max_links=128), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("tests").start_span("long-lived")
    for i in range(10_000):
        span.add_event(f"retry-{i}", {"attempt": i})
        span.add_link(SpanContext(1, i + 1, is_remote=True))
    span.end()
    (exported,) = exporter.get_finished_spans()
    assert [event.name for event in exported.events] == [f"retry-{i}" for i in range(10_000 - 128, 10_000)]
    assert exported.dropped_events == 10_000 - 128
    assert len(exported.links) == 128 and exported.dropped_links == 10_000 - 128


def test_spans_waiting_for_a_stuck_exporter_are_dropped_past_the_queue_size() -> None:
    # BatchSpanProcessor (what setup_telemetry installs, sized by OTEL_BSP_*) holds at most
    # max_queue_size spans: while the collector does not answer, newer spans are dropped.
    exporter = StuckExporter()
    processor = BatchSpanProcessor(
        exporter, max_queue_size=100, max_export_batch_size=10, schedule_delay_millis=1
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    tracer.start_span("first").end()
    assert exporter.entered.wait(5)  # the worker is now stuck inside export()
    for i in range(10_000):
        tracer.start_span(f"span-{i}").end()
    exporter.release.set()
    processor.force_flush()
    processor.shutdown()
    assert 100 <= exporter.exported <= 1 + 100 + 10


class StuckExporter(SpanExporter):
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS
