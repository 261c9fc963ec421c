"""Start-up in the background: it keeps retrying what does not answer, says why, becomes ready when
the dependency appears, and gives up (stopping the service with a non-zero exit) only after the
bound. Fake dependencies and a fake clock; one real uvicorn for the exit path."""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
from aiormq.exceptions import ChannelPreconditionFailed, ProbableAuthenticationError
from sqlalchemy.exc import DBAPIError

from devstack.loopback import free_port
from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.service import STARTUP_FAILURE, run_service
from lantern_runtime.settings import ServiceSettings
from lantern_runtime.startup import STARTING, Backoff, Dependency, Startup, explain
from lantern_runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

BROKER_URL = "amqp://lantern:***@rabbitmq:5672/shop"
DATABASE_URL = "postgresql+asyncpg://orders:***@postgres:5432/orders"


class FakeTime:
    """A clock that moves only when start-up sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class AppearsAt:
    """A dependency that refuses connections until `at` seconds on the fake clock."""

    def __init__(self, time: FakeTime, at: float, error: Exception | None = None) -> None:
        self.time = time
        self.at = at
        self.error = error or ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5672)")
        self.attempts = 0

    async def connect(self) -> None:
        self.attempts += 1
        if self.time.now < self.at:
            raise self.error


def startup(
    time: FakeTime,
    readiness: Readiness,
    *dependencies: Dependency,
    timeout: float = 60.0,
    finished: list[str] | None = None,
) -> Startup:
    async def finish() -> None:
        if finished is not None:
            finished.append("consuming")

    return Startup(
        dependencies,
        finish,
        readiness,
        timeout=timeout,
        backoff=Backoff(first=0.5, cap=5.0),
        clock=time.clock,
        sleep=time.sleep,
    )


async def test_it_keeps_retrying_and_becomes_ready_when_the_dependency_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    broker = AppearsAt(time, at=40.0)
    readiness = Readiness({})
    finished: list[str] = []
    run = startup(time, readiness, Dependency("broker", BROKER_URL, broker.connect), finished=finished)
    assert await readiness.failing() == [STARTING, "broker"]
    with caplog.at_level(logging.INFO, logger="lantern_runtime.startup"):
        assert await run.run() is True
    assert time.now >= 40.0 and broker.attempts > 8
    assert finished == ["consuming"]
    assert await readiness.failing() == []
    assert readiness.gave_up is None
    waits = [r for r in caplog.records if r.message.startswith("waiting for broker")]
    assert len(waits) == broker.attempts - 1
    assert waits[0].message.startswith(
        f"waiting for broker at {BROKER_URL}: nothing listens on rabbitmq:5672 (connection refused); "
        "next attempt in "
    )
    assert {"dependency", "url", "error", "delay", "attempt"} <= set(vars(waits[0]))
    assert "broker connected" in caplog.messages and "started" in caplog.messages


async def test_delays_grow_with_full_jitter_up_to_the_cap() -> None:
    time = FakeTime()
    never = AppearsAt(time, at=float("inf"))
    await startup(time, Readiness({}), Dependency("broker", BROKER_URL, never.connect), timeout=300).run()
    for attempt, delay in enumerate(time.sleeps[:-1], start=1):
        assert 0 <= delay <= min(5.0, 0.5 * 2 ** (attempt - 1))
    # Full jitter, not a fixed schedule: the capped delays spread out.
    assert len({round(delay, 3) for delay in time.sleeps[6:-1]}) > 5


async def test_it_gives_up_at_the_bound_and_asks_for_the_service_to_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    never = AppearsAt(time, at=float("inf"))
    readiness = Readiness({})
    stops: list[str] = []
    readiness.on_give_up(lambda: stops.append("stop"))
    finished: list[str] = []
    run = startup(
        time, readiness, Dependency("broker", BROKER_URL, never.connect), timeout=30.0, finished=finished
    )
    with caplog.at_level(logging.ERROR, logger="lantern_runtime.startup"):
        assert await run.run() is False
    # The last attempt falls on the deadline itself, not a backoff step past it.
    assert time.now == pytest.approx(30.0)
    assert stops == ["stop"] and finished == []
    line = (
        f"start-up gave up after 30 s (STARTUP_TIMEOUT): broker at {BROKER_URL}: "
        "nothing listens on rabbitmq:5672 (connection refused)"
    )
    assert readiness.gave_up == line
    assert [r.message for r in caplog.records if r.levelno >= logging.ERROR] == [line]
    assert await readiness.failing() == [STARTING, "broker"]


async def test_it_waits_for_all_at_once_and_names_only_what_is_still_missing() -> None:
    time = FakeTime()
    database = AppearsAt(time, at=3.0)
    never = AppearsAt(time, at=float("inf"), error=socket.gaierror(-2, "Name or service not known"))
    readiness = Readiness({})
    run = startup(
        time,
        readiness,
        Dependency("database", DATABASE_URL, database.connect),
        Dependency("broker", BROKER_URL, never.connect),
        timeout=20.0,
    )
    assert await run.run() is False
    assert database.attempts > 1
    assert await readiness.failing() == [STARTING, "broker"]
    assert readiness.gave_up is not None
    assert "database" not in readiness.gave_up
    assert f"broker at {BROKER_URL}: host 'rabbitmq' does not resolve" in readiness.gave_up


async def test_a_stop_while_starting_cancels_the_wait_at_once() -> None:
    readiness = Readiness({})
    attempts = 0
    retried = asyncio.Event()

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            retried.set()
        raise ConnectionRefusedError(111, "refused")

    finished: list[str] = []

    async def finish() -> None:
        finished.append("consuming")

    run = Startup([Dependency("broker", BROKER_URL, refused)], finish, readiness, timeout=300)
    task = asyncio.create_task(run.run())
    await asyncio.wait_for(retried.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert finished == [] and readiness.gave_up is None


async def test_a_failure_after_connecting_gives_up_rather_than_hanging_unready() -> None:
    readiness = Readiness({})

    async def connected() -> None:
        return None

    async def finish() -> None:
        raise RuntimeError("channel closed while starting consumers")

    run = Startup([Dependency("broker", BROKER_URL, connected)], finish, readiness, timeout=300)
    assert await run.run() is False
    assert readiness.gave_up == (
        "start-up failed after connecting: RuntimeError: channel closed while starting consumers"
    )


async def test_an_attempt_that_hangs_is_cut_off_and_retried() -> None:
    time = FakeTime()
    attempts = 0

    async def hangs_once() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.Event().wait()

    dependency = Dependency("database", DATABASE_URL, hangs_once, attempt_timeout=0.05)
    assert await startup(time, Readiness({}), dependency).run() is True
    assert attempts == 2


def sqlalchemy_wrapped(driver_error: Exception) -> DBAPIError:
    """How SQLAlchemy's asyncpg dialect hands a driver error up: DBAPIError from the adapted
    error, raised from asyncpg's own."""
    try:
        try:
            try:
                raise driver_error
            except Exception as error:
                raise RuntimeError(str(error)) from error
        except RuntimeError as adapted:
            raise DBAPIError("SELECT 1", None, adapted) from adapted
    except DBAPIError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("error", "url", "explained"),
    [
        (
            ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
            BROKER_URL,
            "RabbitMQ refused the credentials for user 'lantern'",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            "amqp://guest:***@rabbbitmq:5672/",
            "host 'rabbbitmq' does not resolve (Name or service not known)",
        ),
        (
            sqlalchemy_wrapped(
                asyncpg.InvalidPasswordError('password authentication failed for user "orders"')
            ),
            DATABASE_URL,
            "PostgreSQL refused the credentials for user 'orders': "
            'password authentication failed for user "orders"',
        ),
        (
            sqlalchemy_wrapped(
                asyncpg.InvalidAuthorizationSpecificationError('role "orders" does not exist')
            ),
            DATABASE_URL,
            "PostgreSQL refused the credentials for user 'orders': role \"orders\" does not exist",
        ),
        (
            sqlalchemy_wrapped(asyncpg.InvalidCatalogNameError('database "orders" does not exist')),
            DATABASE_URL,
            'PostgreSQL has no such database: database "orders" does not exist',
        ),
        (
            ConnectionRefusedError(111, "refused"),
            DATABASE_URL,
            "nothing listens on postgres:5432 (connection refused)",
        ),
        (TimeoutError(), DATABASE_URL, "no answer in time"),
        (
            ChannelPreconditionFailed(
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'payments.order-events'"
            ),
            BROKER_URL,
            "RabbitMQ holds a queue declared with other arguments (PRECONDITION_FAILED - inequivalent "
            "arg 'x-queue-type' for queue 'payments.order-events'); it was declared by another "
            "version: drain and delete it (README, Messaging: Upgrading)",
        ),
        (ValueError("odd"), DATABASE_URL, "ValueError: odd"),
    ],
)
def test_errors_are_explained_as_what_they_mean(error: BaseException, url: str, explained: str) -> None:
    assert explain(error, url) == explained


def test_a_service_whose_start_up_gives_up_exits_with_the_start_up_failure_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real runner: the server answers its probes while start-up waits, then stops by itself
    and run_service exits non-zero."""
    readiness = Readiness({})
    probes: list[int] = []

    async def refused() -> None:
        raise ConnectionRefusedError(111, "refused")

    async def finish() -> None:
        return None

    settings = ServiceSettings(port=free_port(), shutdown_timeout=1)
    waiting = Startup([Dependency("broker", BROKER_URL, refused)], finish, readiness, timeout=1.0)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(waiting.run())

        async def probe() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as client:
                for _ in range(50):
                    try:
                        probes.append((await client.get("/readyz")).status_code)
                        probes.append((await client.get("/healthz")).status_code)
                        return
                    except httpx.TransportError:
                        await asyncio.sleep(0.02)

        prober = asyncio.create_task(probe())
        yield
        await asyncio.wait([task, prober])

    app = service_app("waiting", readiness=readiness, telemetry=Telemetry("waiting"), lifespan=lifespan)
    with pytest.raises(SystemExit) as exit_:
        run_service(app, settings, readiness, Telemetry("waiting"))
    assert exit_.value.code == STARTUP_FAILURE != 0
    assert probes == [503, 200]
    assert any(m.startswith("start-up gave up after 1 s (STARTUP_TIMEOUT)") for m in caplog.messages)
