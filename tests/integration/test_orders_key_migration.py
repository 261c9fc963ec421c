"""orders' revision 0003 on SQLite and PostgreSQL: Idempotency-Keys become unique per customer,
the orders already stored stay, and downgrading restores the key unique across customers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError

from lantern_runtime.storage import upgrade
from lantern_runtime.storage.migrations import check_models, current_revisions, history_of
from orders.tables import orders

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HISTORY = history_of("orders")


def row(order_id: str, customer_id: str, key: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_id": customer_id,
        "status": "pending",
        "total": Decimal("5.00"),
        "items": [{"sku": "lamp", "quantity": 1, "unit_price": "5.00"}],
        "idempotency_key": key,
        "request_fingerprint": "f" * 64,
        "status_reason": None,
        "created_at": NOW,
        "updated_at": NOW,
    }


async def add(engine: AsyncEngine, order_id: str, customer_id: str, key: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(orders).values(**row(order_id, customer_id, key)))


async def key_constraints(engine: AsyncEngine) -> list[list[str]]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_unique_constraints("orders"))
    return sorted(constraint["column_names"] for constraint in found)


def _downgrade(connection: Connection, target: str) -> None:
    command.downgrade(HISTORY.config(connection), target)


async def test_keys_become_unique_per_customer_and_the_stored_orders_stay(engine: AsyncEngine) -> None:
    await upgrade(engine, HISTORY, "0002")
    await add(engine, "o-1", "alice", "k-1")
    with pytest.raises(IntegrityError):
        await add(engine, "o-2", "bob", "k-1")  # before: one key space for everyone

    assert await upgrade(engine, HISTORY) == {"0003"}
    assert await check_models(engine, HISTORY) == []
    assert await key_constraints(engine) == [["customer_id", "idempotency_key"]]
    await add(engine, "o-2", "bob", "k-1")
    with pytest.raises(IntegrityError):
        await add(engine, "o-3", "alice", "k-1")
    async with engine.connect() as conn:
        stored = (await conn.execute(select(orders.c.id, orders.c.customer_id).order_by(orders.c.id))).all()
    assert [tuple(r) for r in stored] == [("o-1", "alice"), ("o-2", "bob")]
    async with engine.connect() as conn:
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("orders"))
    assert ["updated_at"] in [index["column_names"] for index in indexes]


async def test_downgrading_restores_one_key_space_when_no_two_customers_share_a_key(
    engine: AsyncEngine,
) -> None:
    await upgrade(engine, HISTORY)
    await add(engine, "o-1", "alice", "k-1")
    async with engine.connect() as conn:
        await conn.run_sync(_downgrade, "0002")
        await conn.commit()
        assert await current_revisions(conn) == {"0002"}
    assert await key_constraints(engine) == [["idempotency_key"]]
    with pytest.raises(IntegrityError):
        await add(engine, "o-2", "bob", "k-1")
    assert await upgrade(engine, HISTORY) == {"0003"}
    await add(engine, "o-2", "bob", "k-1")
