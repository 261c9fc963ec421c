"""Calls to other services that survive their failures: timeouts, safe retries within a budget,
and a circuit breaker per upstream."""

from lantern_runtime.resilience.breaker import BreakerState, CircuitBreaker
from lantern_runtime.resilience.budget import RetryBudget
from lantern_runtime.resilience.upstream import (
    CircuitOpen,
    UpstreamClient,
    UpstreamError,
    UpstreamPolicy,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "RetryBudget",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamPolicy",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
