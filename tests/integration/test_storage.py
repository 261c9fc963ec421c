"""The inbox and the effect it guards commit together or not at all, on SQLite and PostgreSQL;
and a pooled PostgreSQL connection that the server closed is replaced, not handed out."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select, text

from lantern_runtime.storage import create_engine, first_delivery, inbox_table
from tests.integration.conftest import engine_with

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()
inbox = inbox_table(metadata)
effects = Table("effects", metadata, Column("message_id", String(200), primary_key=True))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database_url, metadata) as engine:
        yield engine


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_message_is_applied_once_however_often_it_arrives(engine: AsyncEngine) -> None:
    for _ in range(3):
        async with engine.begin() as conn:
            if await first_delivery(conn, inbox, "m-1"):
                await conn.execute(insert(effects).values(message_id="m-1"))
    assert await count(engine, effects) == 1


async def test_a_failed_effect_leaves_no_inbox_entry_so_the_redelivery_applies_it(
    engine: AsyncEngine,
) -> None:
    async def apply_then_crash() -> None:
        async with engine.begin() as conn:
            assert await first_delivery(conn, inbox, "m-2")
            await conn.execute(insert(effects).values(message_id="m-2"))
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        await apply_then_crash()
    assert await count(engine, inbox) == 0
    assert await count(engine, effects) == 0
    async with engine.begin() as conn:
        assert await first_delivery(conn, inbox, "m-2")
        await conn.execute(insert(effects).values(message_id="m-2"))
    assert await count(engine, effects) == 1


@pytest.mark.postgres
async def test_a_connection_the_server_closed_is_replaced_at_checkout(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            backend = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # The pooled connection's server process goes, as in a restart or failover.
        admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", backend)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != backend
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_checking_out_a_live_connection_sends_nothing_to_the_server(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        sent: list[str] = []
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection.add_query_logger(lambda record: sent.append(record.query))
        async with engine.connect():
            pass
        assert sent == []
    finally:
        await engine.dispose()
