"""Alembic's entry point for the notifier database; run it with
`python -m lantern_runtime.storage.migrate notifier`."""

from lantern_runtime.storage.migrations import run_env

run_env()
