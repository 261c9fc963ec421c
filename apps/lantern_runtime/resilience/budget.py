"""A retry budget: retries may add at most a fraction of the calls made recently, so that when
an upstream struggles, its callers do not multiply the load on it.

Calls and retries are counted per slice of the window in a fixed ring of slices, so the budget
holds the same few numbers after a billion calls as after ten: nothing is kept per call. A call
stops counting between `window - window/SLICES` and `window` seconds after it was made.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

SLICES = 20


class RetryBudget:
    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_retries: int = 10,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError(f"a retry budget's window must be positive, not {window!r} s")
        self.ratio = ratio
        self.min_retries = min_retries
        self.window = window
        self._clock = clock
        self._width = window / SLICES
        # Slot i counts the slice numbered _slices[i] (time // width); a stale slot is reused.
        self._slices = [-1] * SLICES
        self._calls = [0] * SLICES
        self._retries = [0] * SLICES

    def _slot(self, now: float) -> int:
        number = math.floor(now / self._width)
        slot = number % SLICES
        if self._slices[slot] != number:
            self._slices[slot] = number
            self._calls[slot] = 0
            self._retries[slot] = 0
        return slot

    def _recent(self, counts: list[int], now: float) -> int:
        oldest = math.floor(now / self._width) - SLICES + 1
        return sum(count for number, count in zip(self._slices, counts, strict=True) if number >= oldest)

    def record_call(self) -> None:
        self._calls[self._slot(self._clock())] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when the budget for this window is spent."""
        now = self._clock()
        slot = self._slot(now)
        allowed = max(self.min_retries, self.ratio * self._recent(self._calls, now))
        if self._recent(self._retries, now) >= allowed:
            return False
        self._retries[slot] += 1
        return True
