"""Async SQLAlchemy engines for SQLite (local default) and PostgreSQL (production)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from sqlalchemy.ext.asyncio import AsyncEngine


def create_engine(url: str) -> AsyncEngine:
    """An engine whose errors and logs name a statement's SQL but never its parameters: a
    failed statement's text reaches logs and spans, and its values are customers' data.
    (create_async_engine is looked up when called, so the SQLAlchemy instrumentation's wrapper
    is the one called, however late it was installed.)"""
    if url.startswith("sqlite"):
        engine = sqlalchemy_asyncio.create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # pysqlite opens transactions lazily and lets a RELEASE SAVEPOINT commit everything;
            # SQLAlchemy's recipe hands transaction control back to it (the "begin" hook below).
            connection.isolation_level = None
            cursor = connection.cursor()
            # WAL lets readers run beside the writer; the busy timeout queues writers.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            # A deferred BEGIN: readers never wait for the writer. Writing transactions start
            # with their write (INSERT, or UPDATE … RETURNING), so they wait for the lock in the
            # busy timeout instead of failing to upgrade a read lock.
            connection.exec_driver_sql("BEGIN")

        return engine
    engine = sqlalchemy_asyncio.create_async_engine(url, pool_size=10, max_overflow=10, hide_parameters=True)
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # Instead of pool_pre_ping, which on asyncpg costs three round trips (BEGIN, ";", ROLLBACK)
    # per checkout: a connection whose server went away (restart, failover, terminated backend)
    # has seen its socket close, and asyncpg knows it without asking. The pool then discards it
    # and checks out another. A connection lost without a close (a dead network path) is not
    # seen here: its first statement fails (a consumer retries the message, a request gets a
    # 500), and SQLAlchemy then discards the whole pool, so the next checkout connects afresh.
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def database_ready(engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    """A readiness check: true while the database answers."""

    async def check() -> bool:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    return check
