"""Every per-call structure of the runtime is bounded: a service runs for months, so what grows a
little on each call, each client or each message must level off. Each bound is shown with a fake
clock, over far more calls than one window holds."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

from lantern_runtime.resilience import CircuitBreaker, RetryBudget, UpstreamClient


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
