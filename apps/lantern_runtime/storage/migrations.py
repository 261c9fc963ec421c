"""Schema migrations with Alembic: one history per service database, kept in the service's own
`migrations` package (`env.py`, `versions/`), run by `python -m lantern_runtime.storage.migrate`.

Services never change their schema themselves. At start-up each checks that its database is at
the head of its history (`require_head`) and stays not ready, saying why, until it is.

Migrating takes a PostgreSQL advisory lock for the whole run, so replicas (init containers of a
rollout, or someone running the CLI by hand beside them) migrate one at a time; the others wait,
then find the database at head and do nothing. A SQLite file belongs to one process and needs
no lock. A database made by `create_all` before migrations existed is recognised by its tables
and stamped at the baseline revision, which creates exactly those tables, so its data stays.

Old builds against a newer schema. During a rolling upgrade old pods restart beside new ones,
and `helm rollback` brings back an older image without downgrading the database; either way a
build meets a database at a revision its history does not have. The rule that makes this
safe is EXPAND first, CONTRACT a release later: a revision may only add (tables, nullable
columns or columns with a server default, indexes, constraints the older code's writes
satisfy) in the release that introduces it; removing or renaming what an older release uses,
or changing what its reads may assume, waits until no running release needs it.

Each revision module says which older builds still work with it: `compatible_with = "0004"`
means code whose head is 0004 or later does (a contract step); `compatible_with = None`, the
default, means expand-only: every build that worked with its down_revision still does. So a
revision's compatibility floor is the latest of its own declaration and its down_revision's
floor; the baseline's is itself. An old build cannot read the revisions it lacks, so migrating
records every known revision's floor in the table `lantern_schema_compatibility` (revision,
compatible_with), before running any of them. A build whose head is H then treats a database
at a revision R it does not know as ahead: migrating does nothing and exits 0, and
`require_head` accepts it when R's recorded floor is in H's history (H is at or after it),
otherwise it stays not ready saying which release the schema needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, Table, insert, inspect, select, text, update

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "COMPATIBILITY_TABLE",
    "InvalidHistory",
    "MigrationHistory",
    "SchemaNotCurrent",
    "check_models",
    "current_revisions",
    "history_of",
    "require_head",
    "run_env",
    "upgrade",
]

logger = logging.getLogger(__name__)

# One key for every Lantern database: each service has a database of its own, and the lock is
# per database, so services never wait for each other.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"lantern.migrations").digest()[:8], "big", signed=True)


# Beside alembic_version, outside every service's models: what each revision a build knew stays
# compatible with, for the older builds that do not know it.
COMPATIBILITY_TABLE = Table(
    "lantern_schema_compatibility",
    MetaData(),
    Column("revision", String(32), primary_key=True),
    Column("compatible_with", String(32), nullable=False),
)


class SchemaNotCurrent(Exception):
    """The database is not at the head revision this build needs."""


class InvalidHistory(Exception):
    """A revision module declares something its history contradicts."""


@dataclass(frozen=True)
class MigrationHistory:
    """A service database's Alembic history: the package holding its scripts, the tables its head
    must match, and the baseline that a database made by `create_all` is stamped at."""

    service: str
    package: str
    metadata: MetaData
    # The first revision, equal to what create_all made before migrations, and those tables.
    baseline: str
    baseline_tables: frozenset[str]

    @cached_property
    def directory(self) -> Path:
        module = importlib.import_module(self.package)
        assert module.__file__ is not None, f"{self.package} is not a package on disk"
        return Path(module.__file__).parent

    def config(self, connection: Connection | None = None) -> Config:
        """An Alembic Config without an alembic.ini; env.py finds the connection and this
        history in its attributes."""
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.attributes["history"] = self
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    @cached_property
    def scripts(self) -> ScriptDirectory:
        # Read once per process: start-up may ask many times while it waits.
        return ScriptDirectory.from_config(self.config())

    def heads(self) -> set[str]:
        return set(self.scripts.get_heads())

    def known(self, revision: str) -> bool:
        return any(script.revision == revision for script in self.scripts.walk_revisions())

    @cached_property
    def floors(self) -> dict[str, str]:
        """Each revision's compatibility floor: the oldest head whose code works with a database
        at that revision (see the module docstring)."""
        in_order = list(self.scripts.walk_revisions())[::-1]  # base first
        position = {script.revision: index for index, script in enumerate(in_order)}
        floors: dict[str, str] = {}
        for script in in_order:
            down = script.down_revision
            parents = () if down is None else (down,) if isinstance(down, str) else tuple(down)
            candidates = [floors[parent] for parent in parents]
            declared = getattr(script.module, "compatible_with", None)
            if declared is not None:
                ancestry = {
                    s.revision for s in self.scripts.walk_revisions(base="base", head=script.revision)
                }
                if declared not in ancestry:
                    raise InvalidHistory(
                        f"{self.service} revision {script.revision} ({script.path}) declares "
                        f"compatible_with = {declared!r}, which is not {script.revision} or one of "
                        "its ancestors: name the oldest revision whose code works with this schema"
                    )
                candidates.append(declared)
            floors[script.revision] = max(candidates, key=position.__getitem__, default=script.revision)
        return floors


def history_of(service: str) -> MigrationHistory:
    """The history of `service` (a package with a `migrations` subpackage defining HISTORY)."""
    try:
        module = importlib.import_module(f"{service}.migrations")
    except ModuleNotFoundError as error:
        raise LookupError(
            f"{service!r} has no migration history: no module {service}.migrations defining HISTORY "
            "(each service with a database has one; see docs/adding-a-service.md)"
        ) from error
    return cast("MigrationHistory", module.HISTORY)


def run_env() -> None:
    """The body of every service's `env.py`: run what Alembic asks on the connection given."""
    config = context.config
    connection = config.attributes.get("connection")
    history = config.attributes.get("history")
    if connection is None or not isinstance(history, MigrationHistory):
        raise RuntimeError(
            "run migrations with `python -m lantern_runtime.storage.migrate <service>`, "
            "not the alembic command: it needs the service's database connection"
        )
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=history.metadata,
        # SQLite alters a table by copying it; batch mode writes migrations that way.
        render_as_batch=sqlite,
        # lantern_runtime.storage.create_engine makes SQLite transactions real (an explicit
        # BEGIN), so a failed revision leaves nothing half done there either.
        transactional_ddl=True,
        # Each revision commits with its version row: a later one failing keeps the earlier.
        transaction_per_migration=True,
        compare_type=True,
        include_name=_models_only,
    )
    with context.begin_transaction():
        context.run_migrations()


def _table_names(connection: Connection) -> list[str]:
    return inspect(connection).get_table_names()


def _current(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(conn: AsyncConnection) -> set[str]:
    return await conn.run_sync(_current)


def _models_only(name: str | None, type_: str, _parent_names: object) -> bool:
    # Autogenerate would otherwise offer to drop the compatibility table: no model has it.
    return not (type_ == "table" and name == COMPATIBILITY_TABLE.name)


def _record_floors(connection: Connection, history: MigrationHistory) -> None:
    COMPATIBILITY_TABLE.create(connection, checkfirst=True)
    table = COMPATIBILITY_TABLE
    rows = connection.execute(select(table.c.revision, table.c.compatible_with))
    stored = {revision: floor for revision, floor in rows}
    for revision, floor in history.floors.items():
        if revision not in stored:
            connection.execute(insert(table).values(revision=revision, compatible_with=floor))
        elif stored[revision] != floor:
            connection.execute(
                update(table).where(table.c.revision == revision).values(compatible_with=floor)
            )


def _recorded_floors(connection: Connection, revisions: Collection[str]) -> dict[str, str]:
    if not inspect(connection).has_table(COMPATIBILITY_TABLE.name):
        return {}
    table = COMPATIBILITY_TABLE
    query = select(table.c.revision, table.c.compatible_with).where(table.c.revision.in_(list(revisions)))
    return {revision: floor for revision, floor in connection.execute(query)}


@dataclass(frozen=True)
class _Ahead:
    """A database at revisions this build's history lacks, and whether this build can serve it."""

    revisions: list[str]
    head: list[str]
    floors: dict[str, str]
    # Why this build cannot work with it; None when its recorded floors are in this history.
    refusal: str | None

    def describe(self) -> str:
        return (
            f"database is at {', '.join(self.revisions)}, ahead of this build's head "
            f"{', '.join(self.head)} (a newer release migrated it)"
        )


def _ahead(connection: Connection, history: MigrationHistory, current: set[str]) -> _Ahead | None:
    newer = sorted(revision for revision in current if not history.known(revision))
    if not newer:
        return None
    floors = _recorded_floors(connection, newer)
    refusal = None
    for revision in newer:
        floor = floors.get(revision)
        if floor is None:
            refusal = (
                f"{revision} has no row in {COMPATIBILITY_TABLE.name}, so nothing says this build "
                f"works with it (was it migrated by `python -m lantern_runtime.storage.migrate "
                f"{history.service}`?)"
            )
            break
        if not history.known(floor):
            refusal = (
                f"{revision} works only with code from revision {floor} on (a newer release "
                "removed or changed what this build uses): roll forward to a release whose "
                f"history has {floor}, or downgrade the database to {', '.join(sorted(history.heads()))} "
                "with the newer release's history"
            )
            break
    return _Ahead(newer, sorted(history.heads()), floors, refusal)


async def require_head(engine: AsyncEngine, history: MigrationHistory) -> None:
    """Start-up's database check: returns once the database answers and is at head; raises
    SchemaNotCurrent saying what to run otherwise."""
    async with engine.connect() as conn:
        current = await current_revisions(conn)
        tables = set() if current else set(await conn.run_sync(_table_names))
        ahead = await conn.run_sync(_ahead, history, current)
    heads = history.heads()
    if current == heads:
        return
    if ahead is not None:
        # A later release migrated it (a rollout in progress, or a rollback).
        if ahead.refusal is not None:
            raise SchemaNotCurrent(f"{ahead.describe()}; this build cannot serve it: {ahead.refusal}")
        logger.warning(
            f"{ahead.describe()}; its schema still works with code from "
            f"{', '.join(sorted(set(ahead.floors.values())))} on, so this build serves it",
            extra={"revisions": ahead.revisions, "head": ahead.head, "floors": ahead.floors},
        )
        return
    run = f"run `python -m lantern_runtime.storage.migrate {history.service}`"
    if not current and tables & history.baseline_tables:
        raise SchemaNotCurrent(
            f"database has tables from before migrations ({', '.join(sorted(tables))}) and no revision; "
            f"{run}: it stamps them at {history.baseline}, then migrates to {', '.join(sorted(heads))}"
        )
    raise SchemaNotCurrent(
        f"database schema is at {', '.join(sorted(current)) or 'no revision (empty)'}, "
        f"this build needs {', '.join(sorted(heads))}: {run}"
    )


async def _lock(conn: AsyncConnection) -> None:
    """Take the migration lock, polling: a session blocked in pg_advisory_lock holds a snapshot,
    which a CREATE INDEX CONCURRENTLY in the holder's migration waits for: a deadlock."""
    if conn.dialect.name != "postgresql":
        return
    waiting = False
    while True:
        # Session-level, not transaction-level: it outlives the commits of each revision.
        taken = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": _LOCK_KEY})).scalar()
        # Committed, so no transaction (and no snapshot) stays open while this one waits.
        await conn.commit()
        if taken:
            return
        if not waiting:
            logger.info("another migration of this database is running; waiting for it to finish")
            waiting = True
        await asyncio.sleep(0.5)


async def _unlock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.rollback()
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
        await conn.commit()


def _upgrade(
    connection: Connection, history: MigrationHistory, target: str
) -> tuple[set[str], set[str], _Ahead | None]:
    before = _current(connection)
    ahead = _ahead(connection, history, before)
    if ahead is not None:
        # Alembic cannot place a revision it does not know ("Can't locate revision"), and there
        # is nothing to do: a newer release migrated it. Its floors stay as that release wrote them.
        connection.rollback()
        return before, before, ahead
    if not before:
        tables = set(_table_names(connection))
        found = tables & history.baseline_tables
        if found:
            missing = history.baseline_tables - tables
            if missing:
                raise SchemaNotCurrent(
                    f"database has {', '.join(sorted(found))} but not {', '.join(sorted(missing))} "
                    "and no revision: it was not made by this service's create_all; "
                    "compare it with the baseline revision by hand"
                )
            connection.commit()
            command.stamp(history.config(connection), history.baseline)
            logger.info(
                f"{history.service} database has the tables create_all made before migrations "
                f"and no revision: stamped at the baseline {history.baseline}",
                extra={"baseline": history.baseline, "tables": sorted(found)},
            )
    # Before any revision runs: one that fails half-way still leaves the database at revisions
    # an older build can judge.
    _record_floors(connection, history)
    # Alembic must find no transaction open, or it treats the run as the caller's and never
    # commits between revisions (which a revision's autocommit block needs).
    connection.commit()
    command.upgrade(history.config(connection), target)
    connection.commit()
    return before, _current(connection), None


async def upgrade(engine: AsyncEngine, history: MigrationHistory, target: str = "head") -> set[str]:
    """Migrate the database to `target` (head by default); returns its revisions after. A
    database ahead of this history is left as it is (see the module docstring)."""
    async with engine.connect() as conn:
        await _lock(conn)
        try:
            before, after, ahead = await conn.run_sync(_upgrade, history, target)
        finally:
            await _unlock(conn)
    url = engine.url.render_as_string(hide_password=True)
    if ahead is not None:
        extra = {"url": url, "revisions": ahead.revisions, "head": ahead.head, "floors": ahead.floors}
        line = f"{history.service} {ahead.describe()}: nothing to migrate"
        if ahead.refusal is None:
            floors = ", ".join(sorted(set(ahead.floors.values())))
            logger.info(f"{line}; its schema still works with code from {floors} on", extra=extra)
        else:
            logger.warning(f"{line}; this build will stay not ready: {ahead.refusal}", extra=extra)
    elif before == after:
        logger.info(
            f"{history.service} database already at {', '.join(sorted(after)) or 'no revision'}",
            extra={"url": url, "revisions": sorted(after)},
        )
    else:
        logger.info(
            f"{history.service} database migrated from {', '.join(sorted(before)) or 'empty'} "
            f"to {', '.join(sorted(after))}",
            extra={"url": url, "from": sorted(before), "to": sorted(after)},
        )
    return after


def _differences(connection: Connection, history: MigrationHistory) -> list[Any]:
    from alembic.autogenerate import compare_metadata

    migration_context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "render_as_batch": connection.dialect.name == "sqlite",
            "include_name": _models_only,
        },
    )
    return list(compare_metadata(migration_context, history.metadata))


async def check_models(engine: AsyncEngine, history: MigrationHistory) -> list[Any]:
    """What autogenerate would write to make the database match the models (as `alembic
    check` does): empty when the head revision and the tables in code agree."""
    async with engine.connect() as conn:
        return await conn.run_sync(_differences, history)
