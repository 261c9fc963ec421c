"""What every service with a database repeats: the engine, its schema migrations, the inbox of
applied messages, the transactional outbox with its relay, and retention of both."""

from lantern_runtime.storage.database import create_engine, database_ready
from lantern_runtime.storage.inbox import first_delivery, inbox_table
from lantern_runtime.storage.migrations import MigrationHistory, SchemaNotCurrent, require_head, upgrade
from lantern_runtime.storage.outbox import OutboxRelay, add_to_outbox, outbox_table
from lantern_runtime.storage.retention import (
    RetentionPolicy,
    RetentionRule,
    RetentionWorker,
    check_inbox_window,
)

__all__ = [
    "MigrationHistory",
    "OutboxRelay",
    "RetentionPolicy",
    "RetentionRule",
    "RetentionWorker",
    "SchemaNotCurrent",
    "add_to_outbox",
    "check_inbox_window",
    "create_engine",
    "database_ready",
    "first_delivery",
    "inbox_table",
    "outbox_table",
    "require_head",
    "upgrade",
]
