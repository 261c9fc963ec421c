"""An index on processed_messages.processed_at, for retention to find expired rows without
scanning the inbox.

On PostgreSQL it is built CONCURRENTLY, outside a transaction: consumers keep inserting into a
large inbox while it builds. A build that failed half-way leaves an invalid index of this name,
dropped first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
# Expand-only: an index; the code before it never sees it.
compatible_with = None

INDEX = "ix_processed_messages_processed_at"


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(INDEX, "processed_messages", ["processed_at"])
        return
    with context.autocommit_block():
        op.drop_index(INDEX, "processed_messages", if_exists=True, postgresql_concurrently=True)
        op.create_index(INDEX, "processed_messages", ["processed_at"], postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index(INDEX, "processed_messages")
