"""The payments database's migration history: `python -m lantern_runtime.storage.migrate payments`."""

from lantern_runtime.storage.migrations import MigrationHistory
from payments.tables import metadata

HISTORY = MigrationHistory(
    service="payments",
    package=__name__,
    metadata=metadata,
    baseline="0001",
    baseline_tables=frozenset({"payments", "outbox", "processed_messages"}),
)
