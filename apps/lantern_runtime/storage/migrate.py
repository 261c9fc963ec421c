"""Migrate a service's database: `python -m lantern_runtime.storage.migrate orders`.

    python -m lantern_runtime.storage.migrate SERVICE              # to head (DATABASE_URL)
    python -m lantern_runtime.storage.migrate SERVICE --wait 300   # first wait for the database
    python -m lantern_runtime.storage.migrate SERVICE current      # the revision it is at
    python -m lantern_runtime.storage.migrate SERVICE check        # head matches the models?
    python -m lantern_runtime.storage.migrate SERVICE revision -m "add orders.note" --autogenerate

The database is the service's own DATABASE_URL (or --database-url). In Kubernetes each pod of a
service with a database runs this as its init container, so the schema is at head before the
service starts; replicas take turns (see lantern_runtime.storage.migrations). A database ahead
of this build's history (a newer release migrated it: `helm rollback`, or an old pod restarting
mid-rollout) is left as it is, with one line saying so, and the run exits 0; whether this build
can serve it is the service's readiness to say, by the rule in lantern_runtime.storage.migrations
(expand first, contract a release later). `revision` reminds the author of that rule.

Exit codes: 0 done; 1 the migration or check failed; 2 bad arguments; 3 the database did not
answer within --wait.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

from alembic import command
from sqlalchemy import text
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_delay
from tenacity import wait_random_exponential as jitter

from lantern_runtime.startup import explain, log_waits
from lantern_runtime.storage.database import create_engine
from lantern_runtime.storage.migrations import (
    InvalidHistory,
    SchemaNotCurrent,
    check_models,
    current_revisions,
    history_of,
    upgrade,
)
from lantern_runtime.telemetry import JsonLogFormatter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.storage.migrations import MigrationHistory

logger = logging.getLogger("lantern_runtime.storage.migrate")

DATABASE_UNREACHABLE = 3

RULE = (
    "EXPAND first, CONTRACT a release later: the release before this one keeps running against "
    "this schema (mid-rollout, and after `helm rollback`). Only add here (tables, nullable columns "
    "or columns with a server default, indexes, constraints its writes satisfy) and leave "
    "compatible_with = None; dropping or renaming what it uses waits a release, and then "
    "compatible_with names the oldest revision whose code works without it."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lantern_runtime.storage.migrate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("service", help="orders, payments or notifier")
    parser.add_argument(
        "action", nargs="?", default="upgrade", choices=["upgrade", "current", "check", "revision"]
    )
    parser.add_argument("--to", default="head", help="upgrade: the target revision (default head)")
    parser.add_argument("--database-url", help="default: DATABASE_URL")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to keep retrying while the database does not answer (default: one try)",
    )
    parser.add_argument("-m", "--message", help="revision: what it changes")
    parser.add_argument("--autogenerate", action="store_true", help="revision: from the models' diff")
    return parser


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    arguments.database_url = arguments.database_url or os.environ.get("DATABASE_URL")
    if not arguments.database_url:
        parser.error("no database: set DATABASE_URL or pass --database-url")
    if arguments.action == "revision" and not arguments.message:
        parser.error("revision needs -m MESSAGE")
    return arguments


async def _reachable(engine: AsyncEngine, wait: float) -> None:
    """Returns once the database answers; retries with full jitter for `wait` seconds."""
    url = engine.url.render_as_string(hide_password=True)
    retrying = AsyncRetrying(
        stop=stop_after_delay(wait),
        wait=jitter(multiplier=0.5, max=5.0),
        retry=retry_if_exception_type(Exception),
        before_sleep=log_waits(logger, f"waiting for database at {url}", url),
    )
    async for attempt in retrying:
        with attempt:
            async with asyncio.timeout(10.0), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))


async def _run(arguments: argparse.Namespace, history: MigrationHistory) -> int:
    engine = create_engine(arguments.database_url)
    url = engine.url.render_as_string(hide_password=True)
    try:
        try:
            await _reachable(engine, arguments.wait)
        except RetryError as error:
            last = error.last_attempt.exception()
            reason = explain(last, url) if last is not None else "no answer"
            logger.error(f"database at {url} did not answer within {arguments.wait:g} s: {reason}")
            return DATABASE_UNREACHABLE
        if arguments.action == "upgrade":
            await upgrade(engine, history, arguments.to)
        elif arguments.action == "current":
            async with engine.connect() as conn:
                current = await current_revisions(conn)
            print(", ".join(sorted(current)) or "no revision")
        elif arguments.action == "check":
            differences = await check_models(engine, history)
            if differences:
                logger.error(f"the models differ from the head revision: {differences}")
                return 1
            logger.info(f"{history.service}: head revision and models agree")
        else:
            # Autogenerate compares with the database as it is: migrate it to head first.
            if await upgrade(engine, history) != history.heads():
                logger.error(
                    f"the database is not at this history's head {', '.join(sorted(history.heads()))}: "
                    "a new revision must follow the head, so write it against a database at it"
                )
                return 1
            async with engine.connect() as conn:

                def write(sync: Connection) -> list[str]:
                    # Numbered ids (0001, 0002, …) read in order; one history has no branches.
                    number = sum(1 for _ in history.scripts.walk_revisions()) + 1
                    written = command.revision(
                        history.config(sync),
                        arguments.message,
                        autogenerate=arguments.autogenerate,
                        rev_id=f"{number:04d}",
                    )
                    scripts = written if isinstance(written, list) else [written]
                    return [script.path for script in scripts if script is not None]

                paths = await conn.run_sync(write)
            for path in paths:
                print(f"wrote {path}")
            print(RULE)
        return 0
    except (SchemaNotCurrent, InvalidHistory) as error:
        logger.error(str(error))
        return 1
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter(arguments.service))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Alembic's own lines ("Context impl …") say nothing an operator needs; errors still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        history = history_of(arguments.service)
    except LookupError as error:
        logger.error(str(error))
        return 2
    return asyncio.run(_run(arguments, history))


if __name__ == "__main__":
    sys.exit(main())
