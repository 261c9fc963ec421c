"""Alembic's entry point for the payments database; run it with
`python -m lantern_runtime.storage.migrate payments`."""

from lantern_runtime.storage.migrations import run_env

run_env()
