"""The breaker's states, the retry budget, and the upstream client's retry rules, against a
real HTTP server on loopback where behaviour on the wire matters."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from lantern_runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    RetryBudget,
    UpstreamClient,
    UpstreamPolicy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.unit.clock import Clock

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_the_breaker_opens_after_the_threshold_of_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker("orders", failure_threshold=3, reset_timeout=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_after() == 5


def test_after_the_reset_timeout_one_trial_goes_through_and_success_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("orders", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # only one trial at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_trial_opens_the_breaker_for_another_full_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker("orders", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now = 6
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 10.9
    assert breaker.state is BreakerState.OPEN
    clock.now = 11
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_trial_that_never_reports_back_expires() -> None:
    clock = Clock()
    breaker = CircuitBreaker("orders", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow()
    clock.now = 10
    assert breaker.allow()


def test_the_retry_budget_allows_a_fraction_of_recent_calls_and_refills_as_they_age() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_retries=2, window=10, clock=clock)
    for _ in range(50):
        budget.record_call()
    spent = sum(budget.try_spend() for _ in range(20))
    assert spent == 5  # 10% of 50
    clock.now = 11
    assert budget.try_spend()  # the window moved on; the floor of min_retries applies again


class Upstream:
    """A real HTTP server whose answers a test scripts: a list of statuses, or a delay."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.delay = 0.0
        self.calls: list[dict[str, Any]] = []
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def answer(request: Request) -> Response:
            self.calls.append(
                {
                    "method": request.method,
                    "key": request.headers.get("idempotency-key"),
                    "traceparent": request.headers.get("traceparent"),
                }
            )
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.statuses.pop(0) if self.statuses else 200
            return Response(status_code=status, headers={"Retry-After": "3"} if status == 503 else {})

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.server.run, daemon=True)
    thread.start()
    while not server.server.started:
        time.sleep(0.01)
    yield server
    server.server.should_exit = True
    thread.join(5)


@pytest.fixture(autouse=True)
def reset(upstream: Upstream) -> None:
    upstream.statuses, upstream.delay, upstream.calls = [], 0.0, []


def client(url: str, **policy: Any) -> UpstreamClient:
    defaults: dict[str, Any] = {"backoff_base": 0.01, "backoff_cap": 0.02, "max_attempts": 3}
    return UpstreamClient("orders", url, UpstreamPolicy(**{**defaults, **policy}))


async def test_an_idempotent_call_is_retried_on_503_until_it_succeeds(upstream: Upstream) -> None:
    upstream.statuses = [503, 503]
    response = await client(upstream.url).request("GET", "/x")
    assert response.status_code == 200
    assert len(upstream.calls) == 3


async def test_a_post_with_an_idempotency_key_is_retried_and_keeps_its_key(upstream: Upstream) -> None:
    upstream.statuses = [502]
    response = await client(upstream.url).request("POST", "/x", headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200
    assert [call["key"] for call in upstream.calls] == ["k-1", "k-1"]


async def test_a_post_without_an_idempotency_key_is_never_retried(upstream: Upstream) -> None:
    upstream.statuses = [503]
    with pytest.raises(UpstreamUnavailable, match="answered 503") as raised:
        await client(upstream.url).request("POST", "/x")
    assert len(upstream.calls) == 1
    assert raised.value.retry_after == 3


async def test_a_client_error_is_an_answer_not_a_failure(upstream: Upstream) -> None:
    upstream.statuses = [404]
    upstreams = client(upstream.url, breaker_failure_threshold=1)
    assert (await upstreams.request("GET", "/x")).status_code == 404
    assert len(upstream.calls) == 1
    assert upstreams.breaker.state is BreakerState.CLOSED


async def test_attempts_stop_at_the_count(upstream: Upstream) -> None:
    upstream.statuses = [503] * 10
    with pytest.raises(UpstreamUnavailable):
        await client(upstream.url, max_attempts=4, breaker_failure_threshold=100).request("GET", "/x")
    assert len(upstream.calls) == 4


async def test_a_slow_upstream_times_out_and_attempts_stop_at_the_total_delay(upstream: Upstream) -> None:
    upstream.delay = 0.3
    with pytest.raises(UpstreamTimeout, match=r"no answer within 0\.1s"):
        await client(upstream.url, timeout=0.1, max_attempts=50, max_elapsed=0.5).request("GET", "/x")
    # Each attempt takes 0.1 s, so the 0.5 s total stops it long before 50 attempts.
    assert 2 <= len(upstream.calls) <= 6


async def test_an_unreachable_upstream_is_named_as_such() -> None:
    with pytest.raises(UpstreamUnavailable, match="orders: unreachable"):
        await client("http://127.0.0.1:9", breaker_failure_threshold=100).request("GET", "/x")


async def test_failures_open_the_breaker_and_then_calls_fail_without_reaching_the_upstream(
    upstream: Upstream,
) -> None:
    upstream.statuses = [503] * 10
    upstreams = client(upstream.url, breaker_failure_threshold=2, max_attempts=5)
    # Two attempts fail and open the breaker; the third is refused without a call.
    with pytest.raises(CircuitOpen):
        await upstreams.request("GET", "/x")
    assert upstreams.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as raised:
        await upstreams.request("GET", "/x")
    assert len(upstream.calls) == 2
    assert raised.value.retry_after >= 1


async def test_the_retry_budget_caps_retries_across_calls(upstream: Upstream) -> None:
    upstreams = client(upstream.url, breaker_failure_threshold=1000, max_attempts=3)
    upstreams.budget = RetryBudget(ratio=0.0, min_retries=2)
    upstream.statuses = [503] * 100
    for _ in range(5):
        with contextlib.suppress(UpstreamUnavailable):
            await upstreams.request("GET", "/x")
    assert len(upstream.calls) == 5 + 2  # five first attempts, then only the budget's two retries


async def test_cancellation_is_never_retried(upstream: Upstream) -> None:
    upstream.delay = 1.0
    task = asyncio.create_task(client(upstream.url, timeout=5).request("GET", "/x"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert len(upstream.calls) == 1
