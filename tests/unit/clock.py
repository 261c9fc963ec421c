"""A clock the test moves by hand: `clock.now += 10` is ten seconds later for what reads it."""

from __future__ import annotations


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
