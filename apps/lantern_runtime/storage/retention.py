"""Retention: sent outbox rows and old inbox ids are deleted, so the tables stop growing.

Deleting is a background worker of the service. Each pass takes a cutoff per table and deletes
the rows older than it in batches of `batch_size`, each batch its own short transaction
(`DELETE … WHERE key IN (SELECT key … LIMIT n FOR UPDATE SKIP LOCKED)`), with a pause between
batches. A batch holds row locks only on the expired rows it deletes, which no handler touches;
on PostgreSQL it skips any row another transaction holds rather than wait for it; on SQLite
each short write waits its turn in the busy timeout like any other writer. Replicas may run
passes at once: they split the rows between them.

Why the inbox window is safe: a message id is only needed while a copy of that message can still
arrive. Redeliveries within the order flow come within MAX_DELIVERY_ATTEMPTS * (HANDLER_TIMEOUT
+ RETRY_MAX_DELAY_MS) of the first delivery (5 * (30 s + 10 s) = 200 s by default: the delay
queues' TTLs are capped at RETRY_MAX_DELAY_MS), a crashed consumer's unacknowledged message is
redelivered at once, and an outbox row published but not marked sent is republished after its
30 s lease. The window must outlast that horizon, and settings refuse one that does not
(`check_inbox_window`). The default, 7 days, is far longer because a dead letter may be replayed
(`lantern_runtime.messaging.deadletters replay`) days later: a dead letter whose handler had
committed before it failed (a time limit hit after the commit) is recognised as applied only
while its id is kept. Replay dead letters within the window; an older one is applied as new.

The payments ledger, orders and notifications are business records: retention never touches
them (notifier's notifications are also its record of what was sent, keyed by message id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.instrumentation.utils import suppress_instrumentation
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.metrics import MeterProvider
    from sqlalchemy import Column, Table
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lantern_runtime.settings import BrokerSettings

__all__ = ["RetentionPolicy", "RetentionRule", "RetentionWorker", "check_inbox_window", "redelivery_horizon"]

logger = logging.getLogger(__name__)

_DAY = 24 * 3600.0


class RetentionPolicy(BaseModel):
    """How long rows are kept and how they are deleted; read as RETENTION__<FIELD>."""

    model_config = ConfigDict(frozen=True)

    # Sent outbox rows are kept this long after they were sent (for looking into a recent flow).
    outbox_sent_seconds: float = Field(default=_DAY, gt=0)
    # Ids of applied messages are kept this long after they were applied (see the module's doc).
    inbox_seconds: float = Field(default=7 * _DAY, gt=0)
    # Seconds between passes; the first pass runs this long after start-up.
    interval_seconds: float = Field(default=600.0, gt=0)
    # Rows deleted per transaction, and the pause between two of them.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_pause_seconds: float = Field(default=0.05, ge=0)


def redelivery_horizon(settings: BrokerSettings) -> float:
    """Seconds after a first delivery within which the order flow can redeliver a message: every
    attempt runs up to the handler's time limit, then waits at most the longest retry delay."""
    return settings.max_delivery_attempts * (settings.handler_timeout + settings.retry_max_delay_ms / 1000)


def check_inbox_window(policy: RetentionPolicy, settings: BrokerSettings) -> None:
    """Refuse an inbox window that a redelivery could outlast: its copy would be applied again."""
    horizon = redelivery_horizon(settings)
    if policy.inbox_seconds <= horizon:
        raise ValueError(
            f"RETENTION__INBOX_SECONDS={policy.inbox_seconds:g} is shorter than the longest a "
            f"redelivery can take, MAX_DELIVERY_ATTEMPTS * (HANDLER_TIMEOUT + RETRY_MAX_DELAY_MS) "
            f"= {horizon:g} s; keep it well above that (default {7 * _DAY:g}, for dead-letter replay)"
        )


@dataclass(frozen=True)
class RetentionRule:
    """Rows of `table` whose `age_column` is older than `max_age_seconds` go, found by `key`."""

    table: Table
    key: Column[Any]
    age_column: Column[Any]
    max_age_seconds: float

    @classmethod
    def sent_outbox(cls, outbox: Table, policy: RetentionPolicy) -> RetentionRule:
        # Unsent rows have no sent_at and so never match: only what was published goes.
        return cls(outbox, outbox.c.id, outbox.c.sent_at, policy.outbox_sent_seconds)

    @classmethod
    def inbox(cls, inbox: Table, policy: RetentionPolicy) -> RetentionRule:
        return cls(inbox, inbox.c.message_id, inbox.c.processed_at, policy.inbox_seconds)


class _Instruments:
    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("lantern_runtime.storage")
        self.deleted = meter.create_counter(
            "lantern.retention.deleted", unit="{row}", description="Rows deleted by retention, per table"
        )
        self.passes = meter.create_counter(
            "lantern.retention.passes",
            unit="{pass}",
            description="Retention passes over one table, by outcome (ok, error)",
        )


class RetentionWorker:
    """Runs the rules every `interval_seconds` until stopped; a Worker of the service."""

    def __init__(
        self,
        engine: AsyncEngine,
        rules: Sequence[RetentionRule],
        policy: RetentionPolicy,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._engine = engine
        self._rules = tuple(rules)
        self._policy = policy
        self._now = now
        self._instruments = _Instruments(meter_provider)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        # Asked, not cancelled: a cancel inside a batch could leave a SQLite write lock held.
        if self._task is not None:
            self._stop.set()
            await self._task

    async def _run(self) -> None:
        while not await self._stopped_within(self._policy.interval_seconds):
            # A pass belongs to no request: traced, each would be a trace of its own.
            with suppress_instrumentation():
                await self.run_once()

    async def run_once(self) -> dict[str, int]:
        """One pass over every rule; returns rows deleted per table. A table whose pass fails is
        logged and counted, and tried again next pass."""
        deleted: dict[str, int] = {}
        for rule in self._rules:
            name = rule.table.name
            try:
                deleted[name] = await self.purge(rule)
            except Exception as error:
                self._instruments.passes.add(1, {"db.collection.name": name, "outcome": "error"})
                logger.warning(
                    f"retention of {name} failed; next pass in {self._policy.interval_seconds:g} s",
                    extra={"table": name, "error": f"{type(error).__name__}: {error}"},
                )
        return deleted

    async def purge(self, rule: RetentionRule) -> int:
        """Delete the rule's expired rows in batches; returns how many went."""
        began = time.monotonic()
        cutoff = self._now() - timedelta(seconds=rule.max_age_seconds)
        expired = (
            select(rule.key)
            .where(rule.age_column < cutoff)
            .limit(self._policy.batch_size)
            .with_for_update(skip_locked=True)
        )
        statement = delete(rule.table).where(rule.key.in_(expired))
        name = rule.table.name
        deleted = batches = 0
        while True:
            async with self._engine.begin() as conn:
                count = (await conn.execute(statement)).rowcount
            deleted += count
            batches += 1
            if count:
                self._instruments.deleted.add(count, {"db.collection.name": name})
            if count < self._policy.batch_size or await self._stopped_within(
                self._policy.batch_pause_seconds
            ):
                break
        self._instruments.passes.add(1, {"db.collection.name": name, "outcome": "ok"})
        logger.info(
            f"retention: deleted {deleted} rows of {name} older than {rule.max_age_seconds:g} s",
            extra={
                "table": name,
                "deleted": deleted,
                "batches": batches,
                "cutoff": cutoff.isoformat(),
                "seconds": round(time.monotonic() - began, 3),
            },
        )
        return deleted

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()
