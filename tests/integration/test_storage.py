"""The inbox and the effect it guards commit together or not at all, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select

from lantern_runtime.storage import first_delivery, inbox_table
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
