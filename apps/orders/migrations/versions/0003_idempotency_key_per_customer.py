"""Idempotency keys per customer: unique on (customer_id, idempotency_key) instead of on the key
alone, so one caller's key can neither collide with nor reveal another caller's order.

The new constraint only allows more, so existing rows always satisfy it. On PostgreSQL its index
is built CONCURRENTLY first (orders keep being placed meanwhile; a build that failed half-way
leaves an invalid index of this name, dropped first), then the constraint takes it over. SQLite
alters a table by copying it (batch mode); its old constraint has no name, so the naming
convention names it to drop it. Downgrading fails if two customers have used the same key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
# A contract step, not an expansion: 0002's code finds an order by its key alone and takes the
# first row, relying on the key being unique across customers. Once two customers share a key it
# would answer one with the other's order (or name it in a 409). Its writes still satisfy the new
# constraint, but its reads do not hold, so only code from this revision on may serve it.
compatible_with = "0003"

NEW = "uq_orders_customer_id_idempotency_key"
# What PostgreSQL named the baseline's unnamed UNIQUE (idempotency_key).
OLD = "orders_idempotency_key_key"
# Names SQLite's unnamed one, as reflected for batch mode, "uq_orders_idempotency_key".
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _key_constraint() -> str:
    """The name of the unique constraint on idempotency_key alone, as this database has it."""
    found = [
        constraint
        for constraint in sa.inspect(op.get_bind()).get_unique_constraints("orders")
        if constraint["column_names"] == ["idempotency_key"]
    ]
    if not found:
        raise RuntimeError("orders has no unique constraint on idempotency_key to replace")
    return found[0]["name"] or "uq_orders_idempotency_key"


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        old = _key_constraint()
        with op.batch_alter_table("orders", naming_convention=CONVENTION) as batch:
            batch.drop_constraint(old, type_="unique")
            batch.create_unique_constraint(NEW, ["customer_id", "idempotency_key"])
        return
    with context.autocommit_block():
        op.drop_index(NEW, "orders", if_exists=True, postgresql_concurrently=True)
        op.create_index(
            NEW, "orders", ["customer_id", "idempotency_key"], unique=True, postgresql_concurrently=True
        )
    op.execute(sa.text(f"ALTER TABLE orders ADD CONSTRAINT {NEW} UNIQUE USING INDEX {NEW}"))
    op.drop_constraint(_key_constraint(), "orders", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint(NEW, type_="unique")
        batch.create_unique_constraint(OLD, ["idempotency_key"])
