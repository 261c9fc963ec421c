"""What every service with a database repeats: the engine, the inbox of applied messages,
and the transactional outbox with its relay."""

from lantern_runtime.storage.database import create_engine, database_ready
from lantern_runtime.storage.inbox import first_delivery, inbox_table
from lantern_runtime.storage.outbox import OutboxRelay, add_to_outbox, outbox_table

__all__ = [
    "OutboxRelay",
    "add_to_outbox",
    "create_engine",
    "database_ready",
    "first_delivery",
    "inbox_table",
    "outbox_table",
]
