"""The payments database: one payment per order, plus the inbox and the outbox."""

from sqlalchemy import Column, DateTime, MetaData, Numeric, String, Table, Text

from lantern_runtime.storage import inbox_table, outbox_table

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("amount", Numeric(14, 2)),
    Column("authorization_id", String(64)),
    Column("reason", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
