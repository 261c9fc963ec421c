"""One client per upstream service: timeouts on every call, retries with exponential backoff
and full jitter only where they are safe, a retry budget, and a circuit breaker.

A retry is safe for idempotent methods and for requests that carry an Idempotency-Key.
Retried: connection failures, timeouts, and 502/503/504 answers. Never retried: anything
else, including cancellation. Attempts stop at `max_attempts` or after `max_elapsed` seconds,
whichever comes first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import trace
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, stop_after_delay, wait_random_exponential

from lantern_runtime.resilience.breaker import CircuitBreaker
from lantern_runtime.resilience.budget import RetryBudget
from lantern_runtime.telemetry.libraries import ATTEMPT, BREAKER, UPSTREAM

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
TRANSIENT_STATUS = frozenset({502, 503, 504})


class UpstreamPolicy(BaseModel):
    """How one upstream is called; each service exposes one per upstream in its settings."""

    timeout: float = Field(default=5.0, gt=0, description="seconds for one attempt")
    connect_timeout: float = Field(default=2.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    max_elapsed: float = Field(default=10.0, gt=0, description="seconds for all attempts together")
    backoff_base: float = Field(default=0.1, gt=0)
    backoff_cap: float = Field(default=2.0, gt=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    retry_budget_ratio: float = Field(default=0.2, ge=0)


class UpstreamError(Exception):
    """The upstream gave no usable answer. `retry_after` hints when to ask again."""

    def __init__(self, upstream: str, detail: str, *, retry_after: float = 1.0) -> None:
        super().__init__(f"{upstream}: {detail}")
        self.upstream = upstream
        self.detail = detail
        self.retry_after = retry_after


class CircuitOpen(UpstreamError):
    """The breaker is open: the call was not made."""


class UpstreamUnavailable(UpstreamError):
    """Unreachable, or it answered 502/503/504."""


class UpstreamTimeout(UpstreamError):
    """No answer within the timeout."""


class UpstreamClient:
    def __init__(self, name: str, base_url: str, policy: UpstreamPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or UpstreamPolicy()
        self.breaker = CircuitBreaker(
            name,
            failure_threshold=self.policy.breaker_failure_threshold,
            reset_timeout=self.policy.breaker_reset_seconds,
        )
        self.budget = RetryBudget(ratio=self.policy.retry_budget_ratio)
        # One pooled client per upstream: connections are reused across calls.
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(self.policy.timeout, connect=self.policy.connect_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send the request; raise an UpstreamError subclass when no usable answer comes."""
        headers = dict(headers or {})
        retry_safe = method.upper() in SAFE_METHODS or any(
            key.lower() == "idempotency-key" for key in headers
        )
        self.budget.record_call()

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed:
                return False
            error = outcome.exception()
            return (
                retry_safe
                and isinstance(error, UpstreamUnavailable | UpstreamTimeout)
                and not isinstance(error, CircuitOpen)
                and state.attempt_number < self.policy.max_attempts
                and self.budget.try_spend()
            )

        retrying = AsyncRetrying(
            retry=should_retry,
            stop=stop_after_delay(self.policy.max_elapsed),
            wait=wait_random_exponential(multiplier=self.policy.backoff_base, max=self.policy.backoff_cap),
            before_sleep=self._note_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(method, url, headers, attempt.retry_state.attempt_number, **kwargs)
        raise AssertionError("tenacity either returns or re-raises")  # pragma: no cover

    async def _attempt(
        self, method: str, url: str, headers: dict[str, str], number: int, **kwargs: Any
    ) -> httpx.Response:
        if not self.breaker.allow():
            retry_after = max(1.0, self.breaker.retry_after())
            raise CircuitOpen(self.name, "circuit breaker is open", retry_after=retry_after)
        # What the httpx instrumentation's hook adds to this attempt's CLIENT span.
        extensions = {UPSTREAM: self.name, ATTEMPT: number, BREAKER: self.breaker.state.value}
        try:
            response = await self._http.request(method, url, headers=headers, extensions=extensions, **kwargs)
        except httpx.TransportError as error:
            self.breaker.record_failure()
            if isinstance(error, httpx.TimeoutException):
                raise UpstreamTimeout(self.name, f"no answer within {self.policy.timeout}s") from error
            raise UpstreamUnavailable(self.name, f"unreachable ({type(error).__name__})") from error
        if response.status_code in TRANSIENT_STATUS:
            self.breaker.record_failure()
            raise UpstreamUnavailable(
                self.name,
                f"answered {response.status_code}",
                retry_after=_retry_after(response),
            )
        self.breaker.record_success()
        return response

    def _note_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        attributes: dict[str, str | int | float] = {
            "upstream": self.name,
            "attempt": state.attempt_number,
            "delay_s": round(delay, 3),
            "reason": str(error),
        }
        trace.get_current_span().add_event("http.retry", attributes)
        logger.info("retrying upstream call", extra=attributes)


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0
