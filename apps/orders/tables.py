"""The orders database: orders, the outbox of events to publish, and the messages already applied."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
    Column("items", JSON, nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("request_fingerprint", String(64), nullable=False),
    Column("status_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Written in the same transaction as the change it announces; the relay publishes it later.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(200), nullable=False, unique=True),
    Column("event_type", String(100), nullable=False),
    Column("correlation_id", String(200)),
    Column("body", Text, nullable=False),
    # The trace context of the transaction that wrote the row, so the publish joins its trace.
    Column("trace_headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), index=True),
)

# A message applied once is never applied again: its id is stored with its effect.
processed_messages = Table(
    "processed_messages",
    metadata,
    Column("message_id", String(200), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)
