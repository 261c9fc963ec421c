"""The inbox: ids of messages already applied, written in the same transaction as their effect,
so a redelivered message is recognised and applied at most once."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import Column, DateTime, MetaData, String, Table
from sqlalchemy.dialects import postgresql, sqlite

if TYPE_CHECKING:
    from sqlalchemy import Insert
    from sqlalchemy.ext.asyncio import AsyncConnection


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "processed_messages",
        metadata,
        Column("message_id", String(200), primary_key=True),
        # Indexed for retention, which deletes by age (lantern_runtime.storage.retention).
        Column("processed_at", DateTime(timezone=True), nullable=False, index=True),
    )


@cache
def _insert(inbox: Table, dialect: str) -> Insert:
    # One statement per inbox table and dialect: built and compiled once, then only executed.
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # ON CONFLICT DO NOTHING instead of catching the error: no savepoint, and no failed
    # statement to poison a PostgreSQL transaction.
    return dialect_insert(inbox).on_conflict_do_nothing()


async def first_delivery(conn: AsyncConnection, inbox: Table, message_id: str) -> bool:
    """Record the message as applied; False if it was applied before. Call inside the effect's
    transaction, so both commit or neither does."""
    result = await conn.execute(
        _insert(inbox, conn.dialect.name),
        {"message_id": message_id, "processed_at": datetime.now(UTC)},
    )
    return result.rowcount == 1
