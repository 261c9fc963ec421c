"""The orders database's migration history: `python -m lantern_runtime.storage.migrate orders`."""

from lantern_runtime.storage.migrations import MigrationHistory
from orders.tables import metadata

HISTORY = MigrationHistory(
    service="orders",
    package=__name__,
    metadata=metadata,
    baseline="0001",
    baseline_tables=frozenset({"orders", "outbox", "processed_messages"}),
)
