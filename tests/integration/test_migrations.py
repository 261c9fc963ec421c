"""Schema migrations, on SQLite and PostgreSQL: an empty database migrates to head and matches
the models; a database made by create_all before migrations keeps its rows; replicas migrating
at once take turns; a service waits, not ready and saying why, until its database is at head."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, inspect, select, text

from lantern_runtime.storage import SchemaNotCurrent, create_engine, require_head, upgrade
from lantern_runtime.storage.migrations import check_models, history_of
from lantern_runtime.telemetry import Telemetry
from orders.bootstrap import create_app
from orders.settings import OrdersSettings
from tests.integration.conftest import failing_once_the_broker_is_up
from tests.integration.legacy_schema import LEGACY

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

SERVICES = ("orders", "payments", "notifier")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# One row in each table of the schema as create_all made it.
ROWS: dict[str, dict[str, dict[str, Any]]] = {
    "orders": {
        "orders": {
            "id": "o-1",
            "customer_id": "c-1",
            "status": "confirmed",
            "total": Decimal("40.10"),
            "items": [{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}],
            "idempotency_key": "k-1",
            "request_fingerprint": "f" * 64,
            "status_reason": None,
            "created_at": NOW,
            "updated_at": NOW,
        },
    },
    "payments": {
        "payments": {
            "order_id": "o-1",
            "status": "authorized",
            "amount": Decimal("40.10"),
            "authorization_id": "a-1",
            "reason": None,
            "updated_at": NOW,
        },
    },
    "notifier": {
        "notifications": {
            "message_id": "o-1:order.confirmed",
            "order_id": "o-1",
            "customer_id": "c-1",
            "kind": "order.confirmed",
            "text": "Your order o-1 is confirmed.",
            "delivered_to": "record",
            "sent_at": NOW,
        },
    },
}
for _service in ("orders", "payments"):
    ROWS[_service]["outbox"] = {
        "message_id": "o-1:event",
        "event_type": "event",
        "correlation_id": "o-1",
        "body": "{}",
        "trace_headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "created_at": NOW,
        "sent_at": NOW,
        "claimed_until": None,
    }
    ROWS[_service]["processed_messages"] = {"message_id": "o-0:payment.authorized", "processed_at": NOW}


def as_written(value: Any) -> Any:
    # SQLite keeps no zone: it hands back the UTC time it was given, without tzinfo.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


@pytest.mark.parametrize("service", SERVICES)
async def test_an_empty_database_migrates_to_head_and_its_tables_match_the_models(
    engine: AsyncEngine, service: str
) -> None:
    history = history_of(service)
    with pytest.raises(SchemaNotCurrent, match=r"no revision \(empty\).*python -m lantern_runtime.storage"):
        await require_head(engine, history)
    assert await upgrade(engine, history) == history.heads()
    await require_head(engine, history)
    # What `alembic check` runs: autogenerate finds nothing to add, drop or alter.
    assert await check_models(engine, history) == []
    assert await table_names(engine) == {
        *history.metadata.tables,
        "alembic_version",
        "lantern_schema_compatibility",
    }
    # Again: nothing to do.
    assert await upgrade(engine, history) == history.heads()


async def test_the_model_check_sees_a_column_the_migrations_lack(engine: AsyncEngine) -> None:
    """So the check above cannot pass by looking at nothing."""
    history = history_of("notifier")
    await upgrade(engine, history)
    changed = MetaData()
    for table in history.metadata.tables.values():
        table.to_metadata(changed)
    Table("notifications", changed, Column("channel", String(20)), extend_existing=True)
    differences = await check_models(engine, replace(history, metadata=changed))
    assert [(kind, column.name) for kind, _, _, column in differences] == [("add_column", "channel")]


@pytest.mark.parametrize("service", SERVICES)
async def test_a_database_made_by_create_all_before_migrations_is_stamped_and_keeps_its_rows(
    engine: AsyncEngine, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = LEGACY[service]()
    async with engine.begin() as conn:
        await conn.run_sync(legacy.create_all)
        for name, row in ROWS[service].items():
            await conn.execute(insert(legacy.tables[name]).values(**row))
    history = history_of(service)
    with pytest.raises(SchemaNotCurrent, match=f"from before migrations.*stamps them at {history.baseline}"):
        await require_head(engine, history)

    with caplog.at_level(logging.INFO, logger="lantern_runtime.storage.migrations"):
        assert await upgrade(engine, history) == history.heads()
    assert f"stamped at the baseline {history.baseline}" in caplog.text

    await require_head(engine, history)
    assert await check_models(engine, history) == []
    async with engine.connect() as conn:
        for name, row in ROWS[service].items():
            (stored,) = (await conn.execute(select(history.metadata.tables[name]))).mappings().all()
            assert {key: as_written(stored[key]) for key in row} == row, name
    if "processed_messages" in ROWS[service]:
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("processed_messages"))
        assert [index["column_names"] for index in indexes] == [["processed_at"]]


async def test_a_database_with_only_some_of_the_tables_is_refused_not_stamped(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(LEGACY["orders"]().tables["orders"].create)
    with pytest.raises(SchemaNotCurrent, match="has orders but not outbox, processed_messages"):
        await upgrade(engine, history_of("orders"))
    assert "alembic_version" not in await table_names(engine)


async def test_a_database_behind_is_refused_and_one_ahead_is_served(engine: AsyncEngine) -> None:
    history = history_of("orders")
    await upgrade(engine, history, "0001")
    with pytest.raises(SchemaNotCurrent, match="schema is at 0001, this build needs 0003"):
        await require_head(engine, history)
    await upgrade(engine, history)
    # A later release migrated it (a rollout in progress or a rollback) and recorded that code at
    # this build's head still works with it: this build may serve.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await conn.execute(text("INSERT INTO lantern_schema_compatibility VALUES ('9999', '0003')"))
    await require_head(engine, history)


@pytest.mark.postgres
async def test_replicas_migrating_at_once_take_turns(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    history = history_of("orders")
    engines = [create_engine(postgres_url) for _ in range(4)]
    try:
        with caplog.at_level(logging.INFO, logger="lantern_runtime.storage.migrations"):
            results = await asyncio.gather(*(upgrade(engine, history) for engine in engines))
        assert results == [history.heads()] * 4
        migrated = [r.message for r in caplog.records if "migrated from empty" in r.message]
        already = [r.message for r in caplog.records if "already at 0003" in r.message]
        assert (len(migrated), len(already)) == (1, 3), caplog.text
        async with engines[0].connect() as conn:
            assert (
                await conn.execute(select(func.count()).select_from(text("alembic_version")))
            ).scalar() == 1
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("service", SERVICES)
def test_the_cli_migrates_then_alembic_check_and_current_agree(postgres_url: str, service: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lantern_runtime.storage.migrate", service, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("check").returncode == 1  # an empty database lacks every table
    migrated = cli()
    assert migrated.returncode == 0, migrated.stderr
    assert f"{service} database migrated from empty to" in migrated.stderr
    assert "lantern:" not in migrated.stderr  # the password is never logged
    checked = cli("check")
    assert checked.returncode == 0, checked.stderr
    assert cli("current").stdout.strip() == ", ".join(sorted(history_of(service).heads()))


def test_the_cli_names_a_database_that_never_answers_and_exits_3() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lantern_runtime.storage.migrate", "orders", "--wait", "1"],
        env={**os.environ, "DATABASE_URL": "postgresql+asyncpg://lantern:secret@127.0.0.1:1/orders"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "nothing listens on 127.0.0.1:1 (connection refused)" in result.stderr
    assert "secret" not in result.stderr


@pytest.mark.rabbitmq
async def test_a_service_waits_not_ready_until_its_database_is_migrated_then_serves(
    database_url: str, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = OrdersSettings(database_url=database_url, amqp_url=amqp_url, startup_timeout=60)
    app, readiness = create_app(settings, Telemetry("orders"))
    with caplog.at_level(logging.WARNING, logger="lantern_runtime.startup"):
        async with app.router.lifespan_context(app):
            assert "database" in await failing_once_the_broker_is_up(readiness)
            waits = [r.message for r in caplog.records if r.message.startswith("waiting for database")]
            assert waits and "SchemaNotCurrent" in waits[-1] and "migrate orders" in waits[-1], waits

            engine = create_engine(database_url)
            try:
                await upgrade(engine, history_of("orders"))
            finally:
                await engine.dispose()
            for _ in range(200):
                if not await readiness.failing():
                    break
                await asyncio.sleep(0.05)
            assert await readiness.failing() == []
