"""A retry budget: retries may add at most a fraction of the calls made recently, so that when
an upstream struggles, its callers do not multiply the load on it."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries: int = 10,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.window = window
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _prune(self, now: float) -> None:
        for stamps in (self._calls, self._retries):
            while stamps and now - stamps[0] > self.window:
                stamps.popleft()

    def record_call(self) -> None:
        self._calls.append(self._clock())

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when the budget for this window is spent."""
        now = self._clock()
        self._prune(now)
        if len(self._retries) >= max(self.min_retries, self.ratio * len(self._calls)):
            return False
        self._retries.append(now)
        return True
