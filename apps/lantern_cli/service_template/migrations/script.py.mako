"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}
# EXPAND first, CONTRACT a release later: the release before this one keeps running against this
# schema (old pods mid-rollout, and after `helm rollback`, which leaves the database as it is).
# Expand-only (add tables, nullable columns or columns with a server default, indexes, constraints
# the older code's writes satisfy): leave compatible_with = None. Removing or renaming what the
# older release uses, or breaking what its reads assume, waits a release; that revision then names
# the oldest revision whose code works with it (often its down_revision), and older builds stay
# not ready against it, saying so (lantern_runtime.storage.migrations).
compatible_with = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
