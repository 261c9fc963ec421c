"""Alembic's entry point for the orders database; run it with
`python -m lantern_runtime.storage.migrate orders`."""

from lantern_runtime.storage.migrations import run_env

run_env()
