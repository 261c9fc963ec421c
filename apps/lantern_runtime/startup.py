"""A service's start-up, run in the background, so services and their dependencies may start in
any order.

The lifespan starts it and yields at once: uvicorn serves /healthz (200) and /readyz (503, naming
what start-up still waits for) while each dependency is retried with exponential backoff and full
jitter. Once all answer, the service finishes starting (consumers, relay, workers) and becomes
ready by itself, in the same process. Only after STARTUP_TIMEOUT does it give up: one line says
what was missing and why, and the process exits non-zero, so the orchestrator sees a failed start
rather than a pod that restarts every few milliseconds or stays unready forever.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelPreconditionFailed,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, wait_random_exponential

from lantern_runtime.heap import freeze_startup_objects
from lantern_runtime.messaging.topology import TopologyNotDeclared

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from tenacity import RetryCallState

    from lantern_runtime.health import Readiness

__all__ = ["STARTING", "Backoff", "Dependency", "Startup", "explain", "log_waits"]

logger = logging.getLogger(__name__)

# Named in /readyz's `failing` from the moment the lifespan yields until the service is ready.
STARTING = "starting"

# PostgreSQL's SQLSTATEs for a refused login (wrong password; unknown role or no pg_hba entry)
# and an unknown database; asyncpg and psycopg both carry them on their errors as `sqlstate`.
_REFUSED_LOGIN = {"28P01", "28000"}
_NO_DATABASE = "3D000"


@dataclass(frozen=True)
class Dependency:
    """Something start-up waits for. `connect` succeeds once it answers, and may be called again
    after it failed."""

    name: str
    # Redacted: it goes into every log line of the wait.
    url: str
    connect: Callable[[], Awaitable[None]]
    # Seconds one attempt may take, for a client whose own connect timeout is long (asyncpg: 60).
    attempt_timeout: float | None = None


@dataclass(frozen=True)
class Backoff:
    """Full jitter: the delay before retry n is uniform in [0, min(cap, first * 2**(n-1))]."""

    # Short at first: a dependency started beside the service is usually up within seconds. The
    # cap keeps a service that has waited long from noticing its dependency late.
    first: float = 0.5
    cap: float = 5.0


class _GaveUp(Exception):
    """A dependency still did not answer at the deadline."""


class Startup:
    """Waits for every dependency (all at once), then runs `finish`; `readiness.starting` names
    what it still waits for. After `timeout` seconds, or if `finish` fails, it gives up through
    `readiness.give_up`, which stops the server."""

    def __init__(
        self,
        dependencies: Sequence[Dependency],
        finish: Callable[[], Awaitable[None]],
        readiness: Readiness,
        *,
        timeout: float,
        backoff: Backoff = Backoff(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._dependencies = tuple(dependencies)
        self._finish = finish
        self._readiness = readiness
        self._timeout = timeout
        self._backoff = backoff
        self._clock = clock
        self._sleep = sleep
        readiness.starting = [STARTING, *(dependency.name for dependency in self._dependencies)]

    async def run(self) -> bool:
        """True once the service has started; False if start-up gave up."""
        began = self._clock()
        missing = await self._connect_all(deadline=began + self._timeout)
        if missing:
            self._give_up(
                f"start-up gave up after {self._timeout:g} s (STARTUP_TIMEOUT): {'; '.join(missing)}"
            )
            return False
        try:
            await self._finish()
        except Exception as error:
            logger.exception("start-up failed after connecting")
            self._give_up(f"start-up failed after connecting: {type(error).__name__}: {error}")
            return False
        self._readiness.starting = []
        logger.info("started", extra={"seconds": round(self._clock() - began, 3)})
        # What start-up built in the background lives as long as the process, too.
        freeze_startup_objects()
        return True

    async def _connect_all(self, deadline: float) -> list[str]:
        """Waits for all at once; returns why each one still missing at the deadline is missing.
        (gather, not a TaskGroup: one giving up must not cancel another's wait, which ends at the
        same deadline and has its own reason to report.)"""
        waits = [self._wait_for(dependency, deadline) for dependency in self._dependencies]
        missing: list[str] = []
        for outcome in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(outcome, _GaveUp):
                missing.append(str(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
        return missing

    async def _wait_for(self, dependency: Dependency, deadline: float) -> None:
        jitter = wait_random_exponential(multiplier=self._backoff.first, max=self._backoff.cap)
        began = self._clock()

        def past_deadline(_state: RetryCallState) -> bool:
            return self._clock() >= deadline

        def next_delay(state: RetryCallState) -> float:
            # The last attempt falls on the deadline, not a backoff step past it.
            return min(jitter(state), max(0.0, deadline - self._clock()))

        retrying = AsyncRetrying(
            stop=past_deadline,
            wait=next_delay,
            # Every error is worth another try until the deadline: a refused login may be a
            # secret not yet mounted, an unknown host a DNS record not yet published.
            retry=retry_if_exception_type(Exception),
            before_sleep=partial(self._log_wait, dependency, began),
            sleep=self._sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await _attempt(dependency)
        except RetryError as error:
            last = error.last_attempt.exception()
            reason = explain(last, dependency.url) if last is not None else "no answer"
            raise _GaveUp(f"{dependency.name} at {dependency.url}: {reason}") from last
        self._readiness.starting.remove(dependency.name)
        logger.info(
            f"{dependency.name} connected",
            extra={
                "dependency": dependency.name,
                "url": dependency.url,
                "attempts": retrying.statistics.get("attempt_number", 1),
                "seconds": round(self._clock() - began, 3),
            },
        )

    def _log_wait(self, dependency: Dependency, began: float, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        reason = explain(error, dependency.url) if error is not None else "no answer"
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            f"waiting for {dependency.name} at {dependency.url}: {reason}; next attempt in {delay:.1f} s",
            extra={
                "dependency": dependency.name,
                "url": dependency.url,
                "error": reason,
                "attempt": state.attempt_number,
                "delay": round(delay, 3),
                "waited": round(self._clock() - began, 3),
            },
        )

    def _give_up(self, line: str) -> None:
        logger.error(line)
        self._readiness.give_up(line)


async def _attempt(dependency: Dependency) -> None:
    if dependency.attempt_timeout is None:
        await dependency.connect()
        return
    async with asyncio.timeout(dependency.attempt_timeout):
        await dependency.connect()


def log_waits(log: logging.Logger, waiting: str, url: str) -> Callable[[RetryCallState], None]:
    """A tenacity `before_sleep` for the one-shot CLIs (migrate, declare): one warning per
    failed attempt, `<waiting>: <what the failure means>`."""

    def log_wait(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(f"{waiting}: {explain(error, url) if error is not None else 'no answer'}")

    return log_wait


def explain(error: BaseException, url: str) -> str:
    """What a failed connection attempt to `url` means, in words an operator can act on."""
    parts = urlsplit(url)
    causes = list(_causes(error))
    # Looked for first: a name that does not resolve shows further down the chain as other errors.
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return f"host {parts.hostname!r} does not resolve ({cause.strerror})"
    for cause in causes:
        if isinstance(cause, ProbableAuthenticationError):
            return f"RabbitMQ refused the credentials for user {parts.username!r}"
        if isinstance(cause, InvalidFrameError) and "Connection.Close" in str(cause):
            # RabbitMQ closes the connection instead of opening a vhost it lacks or the user
            # may not use.
            return (
                f"RabbitMQ refused vhost {parts.path.lstrip('/') or '/'!r} for user {parts.username!r}: "
                "does it exist, and has the user permissions on it?"
            )
        if isinstance(cause, TopologyNotDeclared):
            # Waited for too: the init container (or `make run`) declares it beside the service.
            return str(cause)
        if isinstance(cause, ChannelAccessRefused):
            return (
                f"RabbitMQ refused user {parts.username!r} an operation ({cause}); its permissions "
                "are the chart's (lantern_runtime.messaging.permissions)"
            )
        if isinstance(cause, ChannelPreconditionFailed):
            # Waited for like the rest: once the operator deletes the queue, the next try works.
            return (
                f"RabbitMQ holds a queue declared with other arguments ({cause}); "
                "it was declared by another version: drain and delete it (README, Messaging: Upgrading)"
            )
        sqlstate = getattr(cause, "sqlstate", None)
        if sqlstate in _REFUSED_LOGIN:
            return f"PostgreSQL refused the credentials for user {parts.username!r}: {cause}"
        if sqlstate == _NO_DATABASE:
            return f"PostgreSQL has no such database: {cause}"
        if isinstance(cause, ConnectionRefusedError):
            where = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
            return f"nothing listens on {where} (connection refused)"
        if isinstance(cause, TimeoutError):
            return "no answer in time"
    return f"{type(error).__name__}: {error}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it was raised from or during, e.g. SQLAlchemy's DBAPIError → the
    driver's error → the socket's."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
