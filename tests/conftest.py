"""Fixtures for the live RabbitMQ and PostgreSQL on this machine; each test run gets its own
vhost and database, so runs never collide with each other or with `make run`."""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from devstack.rabbitmq import fresh_vhost

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator

POSTGRES_URL = os.environ.get("LANTERN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost for one test, as the admin (guest): its queues start empty and
    vanish afterwards. The order flow's topology is declared in it, as the chart's topology
    step declares it before any service starts; a test of another topology declares its own."""
    from lantern_runtime.messaging import declare_topology
    from order_flow.topology import ORDER_FLOW

    with fresh_vhost() as url:
        _in_thread(declare_topology(url, ORDER_FLOW))
        yield url


def _in_thread(work: Coroutine[Any, Any, None]) -> None:
    # In a thread of its own, so an async fixture or test may ask for a fixture using it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


@contextmanager
def fresh_database(migrated_for: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards; yields its asyncpg SQLAlchemy URL. With
    `migrated_for` (a service), migrated to the head of that service's history first."""
    import asyncpg

    from lantern_runtime.storage import create_engine, upgrade
    from lantern_runtime.storage.migrations import history_of

    name = f"lantern_test_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def migrate(url: str, service: str) -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine, history_of(service))
        finally:
            await engine.dispose()

    def run(work: Coroutine[Any, Any, None]) -> None:
        # In a thread of its own, so an async fixture may ask for this one too.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, work).result()

    run(admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        if migrated_for is not None:
            run(migrate(f"{base}/{name}", migrated_for))
        yield f"{base}/{name}"
    finally:
        run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, as an asyncpg SQLAlchemy URL."""
    with fresh_database() as url:
        yield url
