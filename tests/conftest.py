"""Fixtures for the live RabbitMQ and PostgreSQL on this machine; each test run gets its own
vhost and database, so runs never collide with each other or with `make run`."""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

from devstack.rabbitmq import fresh_vhost

if TYPE_CHECKING:
    from collections.abc import Iterator

POSTGRES_URL = os.environ.get("LANTERN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost for one test: its queues start empty and vanish afterwards."""
    with fresh_vhost() as url:
        yield url


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards; yields its asyncpg SQLAlchemy URL."""
    import asyncpg

    name = f"lantern_test_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def run(statement: str) -> None:
        # In a thread of its own, so an async fixture may ask for this one too.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, admin(statement)).result()

    run(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, as an asyncpg SQLAlchemy URL."""
    with fresh_database() as url:
        yield url
