"""The notifier database's migration history: `python -m lantern_runtime.storage.migrate notifier`."""

from lantern_runtime.storage.migrations import MigrationHistory
from notifier.notifications import metadata

HISTORY = MigrationHistory(
    service="notifier",
    package=__name__,
    metadata=metadata,
    baseline="0001",
    baseline_tables=frozenset({"notifications"}),
)
