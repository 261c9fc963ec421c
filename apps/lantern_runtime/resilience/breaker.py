"""A circuit breaker: after enough consecutive failures an upstream is left alone for a while,
then one trial call decides whether it is back."""

from __future__ import annotations

import time
import weakref
from enum import StrEnum
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import Observation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from opentelemetry.metrics import CallbackOptions


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Exported as a number so dashboards can graph it: 0 closed, 1 open, 2 half-open.
_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}
_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_gauge_registered = False


def _observe(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(_STATE_VALUE[b.state], {"upstream": b.name}) for b in list(_breakers)]


def _register(breaker: CircuitBreaker) -> None:
    global _gauge_registered
    _breakers.add(breaker)
    if not _gauge_registered:
        metrics.get_meter("lantern_runtime.resilience").create_observable_gauge(
            "lantern.circuit_breaker.state",
            callbacks=[_observe],
            description="Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
        )
        _gauge_registered = True


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        # When the half-open trial started; a trial that never reports back expires.
        self._trial_started: float | None = None
        _register(self)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_after(self) -> float:
        """Seconds until the breaker lets a trial call through; 0 when it would now."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open, only one trial at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if state is BreakerState.HALF_OPEN and (
            self._trial_started is None or now - self._trial_started >= self.reset_timeout
        ):
            self._trial_started = now
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_started = None

    def record_failure(self) -> None:
        self._trial_started = None
        if self._opened_at is not None:
            # A failed trial (or a late failure) opens it for another full period.
            self._opened_at = self._clock()
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
