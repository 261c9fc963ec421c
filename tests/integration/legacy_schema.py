"""The services' tables exactly as `metadata.create_all` made them before migrations existed
(frozen here: the models in code move on, a database made back then does not)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, Numeric, String, Table, Text


def _outbox(metadata: MetaData) -> None:
    Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("message_id", String(200), nullable=False, unique=True),
        Column("event_type", String(100), nullable=False),
        Column("correlation_id", String(200)),
        Column("body", Text, nullable=False),
        Column("trace_headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), index=True),
        Column("claimed_until", DateTime(timezone=True)),
    )


def _inbox(metadata: MetaData) -> None:
    Table(
        "processed_messages",
        metadata,
        Column("message_id", String(200), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


def orders() -> MetaData:
    metadata = MetaData()
    Table(
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
        Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
    )
    _outbox(metadata)
    _inbox(metadata)
    return metadata


def payments() -> MetaData:
    metadata = MetaData()
    Table(
        "payments",
        metadata,
        Column("order_id", String(36), primary_key=True),
        Column("status", String(20), nullable=False),
        Column("amount", Numeric(14, 2)),
        Column("authorization_id", String(64)),
        Column("reason", Text),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    _outbox(metadata)
    _inbox(metadata)
    return metadata


def notifier() -> MetaData:
    metadata = MetaData()
    Table(
        "notifications",
        metadata,
        Column("message_id", String(200), primary_key=True),
        Column("order_id", String(36), nullable=False, index=True),
        Column("customer_id", String(200), nullable=False),
        Column("kind", String(50), nullable=False),
        Column("text", Text, nullable=False),
        Column("delivered_to", Text, nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=False),
    )
    return metadata


LEGACY = {"orders": orders, "payments": payments, "notifier": notifier}
