"""Exponential backoff with full jitter, shared by HTTP retries and message redelivery."""

from __future__ import annotations

import random


def full_jitter_delay(attempt: int, base: float, cap: float) -> float:
    """A random delay in [0, min(cap, base * 2**(attempt-1))] before retry number `attempt` (1-based).

    Full jitter spreads the retries of many clients apart, so they do not return in waves.
    """
    if attempt < 1:
        raise ValueError(f"attempt is counted from 1, got {attempt}")
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)
