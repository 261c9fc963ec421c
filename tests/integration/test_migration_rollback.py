"""Rollback and old pods, on SQLite and PostgreSQL: a build whose history is behind its database
(as after `helm rollback`, or an old pod restarting mid-rollout) migrates nothing and exits 0,
then serves when the newer revisions are expand-only for it, and stays not ready, saying why,
when one of them is a contract step it does not reach (lantern_runtime.storage.migrations).

"An image with history N" is a copy of a service's real migrations package keeping revisions up
to N; "a release at N+1" is a copy with one more revision. Both import under a name of their own
from a temporary directory, which the migration CLI takes as its service argument."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

import orders
from lantern_runtime.storage import SchemaNotCurrent, create_engine, require_head, upgrade
from lantern_runtime.storage.migrations import InvalidHistory, MigrationHistory, history_of
from lantern_runtime.telemetry import Telemetry
from orders.bootstrap import create_app
from orders.domain import OrderLine, PlaceOrder
from orders.repository import OrderRepository
from orders.settings import OrdersSettings
from tests.integration.conftest import failing_once_the_broker_is_up

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

APPS = Path(orders.__file__).parent.parent

# A revision after orders' real head; `compatible_with` says whether it is expand-only.
REVISION = '''"""Test revision {rev}: a nullable column orders.{column}.

Revision ID: {rev}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None
compatible_with = {compatible_with!r}


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("{column}", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("{column}")
'''


class Images:
    """Migration packages of other releases, importable from one temporary directory."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        monkeypatch.syspath_prepend(str(root))

    def build(
        self, service: str, *, up_to: str | None = None, add: dict[str, str | None] | None = None
    ) -> str:
        """A package whose `migrations` is `service`'s history up to `up_to` (all of it by
        default) plus `add` (new revision id -> its compatible_with), each revising the last."""
        name = f"{service}_{uuid.uuid4().hex[:8]}"
        target = self.root / name / "migrations"
        shutil.copytree(APPS / service / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
        (self.root / name / "__init__.py").write_text("")
        versions = sorted((target / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
        for script in versions:
            if up_to is not None and script.name[:4] > up_to:
                script.unlink()
        last = max(script.name[:4] for script in (target / "versions").glob("*.py"))
        for rev, compatible_with in (add or {}).items():
            module = REVISION.format(
                rev=rev, down=last, column=f"note_{rev}", compatible_with=compatible_with
            )
            (target / "versions" / f"{rev}_note_{rev}.py").write_text(module)
            last = rev
        importlib.invalidate_caches()
        return name

    def history(self, name: str) -> MigrationHistory:
        return history_of(name)

    def migrate(self, name: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The migration CLI as an init container runs it, with this package as its image's."""
        path = os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-m", "lantern_runtime.storage.migrate", name, *args],
            env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Images:
    return Images(tmp_path / "images", monkeypatch)


def ahead_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ahead of this build's head" in line]


@pytest.mark.parametrize(
    ("service", "old_head", "new_head", "verdict"),
    [
        # 0003 is a contract step for 0002's code; payments' 0002 (an index) is expand-only.
        (
            "orders",
            "0002",
            "0003",
            "this build will stay not ready: 0003 works only with code from revision 0003 on",
        ),
        ("payments", "0001", "0002", "its schema still works with code from 0001 on"),
    ],
)
def test_an_image_behind_its_database_migrates_nothing_says_ahead_and_exits_0(
    images: Images, database_url: str, service: str, old_head: str, new_head: str, verdict: str
) -> None:
    release = images.migrate(service, database_url)
    assert release.returncode == 0, release.stderr

    older = images.migrate(images.build(service, up_to=old_head), database_url, "--wait", "5")
    assert older.returncode == 0, older.stderr
    assert "Can't locate revision" not in older.stderr
    (line,) = ahead_lines(older.stderr)
    assert f"database is at {new_head}, ahead of this build's head {old_head}" in line
    assert f"nothing to migrate; {verdict}" in line
    assert images.migrate(service, database_url, "current").stdout.strip() == new_head


async def test_expand_only_revisions_ahead_are_served_by_the_older_builds_readiness(
    images: Images, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await upgrade(engine, images.history(images.build("orders", add={"0004": None, "0005": None})))
    with caplog.at_level(logging.WARNING, logger="lantern_runtime.storage.migrations"):
        await require_head(engine, history_of("orders"))
    assert (
        "database is at 0005, ahead of this build's head 0003 (a newer release migrated it); "
        "its schema still works with code from 0003 on, so this build serves it"
    ) in caplog.text


async def test_payments_at_0001_serves_a_database_at_0002(images: Images, engine: AsyncEngine) -> None:
    await upgrade(engine, history_of("payments"))
    await require_head(engine, images.history(images.build("payments", up_to="0001")))


async def test_a_contract_step_the_older_build_does_not_reach_keeps_it_not_ready_saying_why(
    images: Images, engine: AsyncEngine
) -> None:
    # 0004 contracts (code from 0004 on only); 0005 after it is expand-only, so inherits that floor.
    release = images.history(images.build("orders", add={"0004": "0004", "0005": None}))
    await upgrade(engine, release)
    with pytest.raises(
        SchemaNotCurrent,
        match=r"database is at 0005, ahead of this build's head 0003 .*cannot serve it: 0005 works only "
        r"with code from revision 0004 on .*roll forward to a release whose history has 0004",
    ):
        await require_head(engine, history_of("orders"))
    # The release that made the contract step serves it.
    await require_head(engine, images.history(images.build("orders", add={"0004": "0004"})))


async def test_the_real_0003_is_recorded_as_a_contract_step_for_0002s_code(
    images: Images, engine: AsyncEngine
) -> None:
    """0002's code finds an order by its key alone; 0003 lets two customers share a key."""
    assert history_of("orders").floors == {"0001": "0001", "0002": "0001", "0003": "0003"}
    await upgrade(engine, history_of("orders"))
    for old_head in ("0002", "0001"):
        with pytest.raises(SchemaNotCurrent, match="0003 works only with code from revision 0003 on"):
            await require_head(engine, images.history(images.build("orders", up_to=old_head)))


async def test_a_revision_without_a_compatibility_record_is_not_served(engine: AsyncEngine) -> None:
    history = history_of("orders")
    await upgrade(engine, history)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0777'"))
    with pytest.raises(SchemaNotCurrent, match="0777 has no row in lantern_schema_compatibility"):
        await require_head(engine, history)


async def test_compatible_with_must_name_the_revision_or_an_ancestor(
    images: Images, engine: AsyncEngine
) -> None:
    history = images.history(images.build("orders", add={"0004": "0009"}))
    with pytest.raises(InvalidHistory, match=r"0004 .* declares compatible_with = '0009', which is not 0004"):
        await upgrade(engine, history)


@pytest.mark.rabbitmq
async def test_after_a_rollback_the_previous_release_migrates_nothing_then_becomes_ready_and_places_orders(
    images: Images, database_url: str, amqp_url: str
) -> None:
    # The release after today's added 0004, expand-only; `helm rollback` brings back today's image.
    assert images.migrate(images.build("orders", add={"0004": None}), database_url).returncode == 0
    rolled_back = images.migrate("orders", database_url, "--wait", "5")
    assert rolled_back.returncode == 0, rolled_back.stderr
    (line,) = ahead_lines(rolled_back.stderr)
    assert "database is at 0004, ahead of this build's head 0003" in line

    settings = OrdersSettings(database_url=database_url, amqp_url=amqp_url, startup_timeout=60)
    app, readiness = create_app(settings, Telemetry("orders"))
    async with app.router.lifespan_context(app):
        for _ in range(400):
            if not await readiness.failing():
                break
            await asyncio.sleep(0.05)
        assert await readiness.failing() == []
    # Today's code writes and reads its orders on the newer schema.
    engine = create_engine(database_url)
    try:
        repository = OrderRepository(engine)
        command = PlaceOrder(items=[OrderLine(sku="lamp", quantity=1, unit_price=Decimal("5.00"))])
        order, created = await repository.place("alice", command, "k-1")
        assert created
        assert await repository.place("alice", command, "k-1") == (order, False)
    finally:
        await engine.dispose()


@pytest.mark.rabbitmq
async def test_against_a_contract_step_the_previous_release_stays_not_ready_and_logs_the_reason(
    images: Images, database_url: str, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert images.migrate(images.build("orders", add={"0004": "0004"}), database_url).returncode == 0
    assert images.migrate("orders", database_url).returncode == 0  # the init container lets it start

    settings = OrdersSettings(database_url=database_url, amqp_url=amqp_url, startup_timeout=60)
    app, readiness = create_app(settings, Telemetry("orders"))
    with caplog.at_level(logging.WARNING, logger="lantern_runtime.startup"):
        async with app.router.lifespan_context(app):
            assert "database" in await failing_once_the_broker_is_up(readiness)
    waits = [r.message for r in caplog.records if r.message.startswith("waiting for database")]
    assert waits, caplog.text
    assert "0004 works only with code from revision 0004 on" in waits[-1], waits


def test_revision_reminds_the_author_of_expand_then_contract(images: Images, database_url: str) -> None:
    name = images.build("orders")
    written = images.migrate(name, database_url, "revision", "-m", "add a note", "--autogenerate")
    assert written.returncode == 0, written.stderr
    assert "EXPAND first, CONTRACT a release later" in written.stdout
    (script,) = (images.root / name / "migrations" / "versions").glob("0004_*.py")
    source = script.read_text()
    assert "# EXPAND first, CONTRACT a release later" in source
    assert "\ncompatible_with = None\n" in source
    assert images.history(name).floors["0004"] == "0003"
