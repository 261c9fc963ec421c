"""Baseline: the notifier tables exactly as `metadata.create_all` made them before migrations.

A database made that way has these tables and no alembic_version; migrating stamps it at this
revision instead of running it (lantern_runtime.storage.migrations), so its rows stay.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
# The first revision: no older build exists.
compatible_with = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("delivered_to", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id"),
    )
    op.create_index("ix_notifications_order_id", "notifications", ["order_id"])


def downgrade() -> None:
    op.drop_table("notifications")
