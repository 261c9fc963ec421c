"""Handler time limits from one timer per subscriber instead of one per message.

`asyncio.timeout` schedules a timer handle for every message and cancels it when the handler
returns, which costs a consumer about as much as validating the message. A subscriber's
handlers share one periodic check here instead: a handler past its limit is cancelled, and that
cancellation becomes a TimeoutError, as `asyncio.timeout` does it. The check runs every tenth of
the limit (at most every second), so a handler is stopped at most that much late; it runs only
while handlers are in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HandlerDeadlines"]

_Watch = tuple["asyncio.Task[Any]", int]


class HandlerDeadlines:
    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a handler time limit must be positive, not {seconds!r} s")
        self.seconds = seconds
        self._every = min(1.0, seconds / 10)
        self._running: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._check_handle: asyncio.TimerHandle | None = None

    def watch(self) -> _Watch:
        """Start the limit for the handler running in the current task."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a handler's time limit needs a running task")
        loop = task.get_loop()
        self._running[task] = loop.time() + self.seconds
        if self._check_handle is None:
            self._check_handle = loop.call_later(self._every, self._check, loop)
        return task, task.cancelling()

    def leave(self, watch: _Watch, error: BaseException | None) -> bool:
        """Stop the limit; True if `error` is this limit's own cancellation (then raise TimeoutError)."""
        task, cancelling = watch
        self._running.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        # Only this limit's cancel is taken back: one from elsewhere (shutdown) goes on.
        return task.uncancel() <= cancelling and isinstance(error, asyncio.CancelledError)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._running.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._check_handle = loop.call_later(self._every, self._check, loop) if self._running else None
