"""The orders database: orders, the outbox of events to publish, and the messages already applied."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, MetaData, Numeric, String, Table, Text, UniqueConstraint

from lantern_runtime.storage import inbox_table, outbox_table

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
    Column("items", JSON, nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("request_fingerprint", String(64), nullable=False),
    Column("status_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
    # Each customer has a key space of its own: the same key from two customers is two orders.
    UniqueConstraint("customer_id", "idempotency_key", name="uq_orders_customer_id_idempotency_key"),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
