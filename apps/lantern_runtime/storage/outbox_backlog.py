"""The outbox's backlog as two gauges: `lantern.outbox.pending` (unsent rows) and
`lantern.outbox.oldest_age` (seconds since the oldest unsent row was written, 0 when none).

The relay counts the backlog on each poll and keeps the count here; the gauges' callbacks, run
by the SDK's export thread, only read it, so an export never waits on the database. The age is
computed from the oldest row's write time at each export: when the relay stops polling (stuck,
crashed, its database gone) the age it last saw keeps growing, which is what an alert needs.

Every replica counts the whole table, so across pods the backlog is the max, not the sum.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import Observation

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider


@dataclass(frozen=True)
class Backlog:
    pending: int
    # When the oldest unsent row was written; None when nothing is pending.
    oldest: datetime | None

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.oldest).total_seconds()) if self.oldest is not None else 0.0


class BacklogGauge:
    """What one relay last counted, replaced whole on each poll, so the export thread reads a
    consistent pair without a lock. None until the first count."""

    def __init__(self) -> None:
        self.last: Backlog | None = None


class _Relays:
    """The gauges of one meter provider. The SDK keeps the callbacks of an instrument's first
    registration only, so every relay reporting through a provider is read by one callback each
    for pending and age; within a process they add up (rows) and the oldest wins (age)."""

    def __init__(self, meter: Meter) -> None:
        self.gauges: weakref.WeakSet[BacklogGauge] = weakref.WeakSet()
        meter.create_observable_gauge(
            "lantern.outbox.pending",
            callbacks=[self._pending],
            unit="{row}",
            description="Outbox rows not yet published",
        )
        meter.create_observable_gauge(
            "lantern.outbox.oldest_age",
            callbacks=[self._oldest_age],
            unit="s",
            description="Age of the oldest outbox row not yet published; 0 when none",
        )

    def _counted(self) -> list[Backlog]:
        return [gauge.last for gauge in list(self.gauges) if gauge.last is not None]

    def _pending(self, _options: CallbackOptions) -> Iterable[Observation]:
        counted = self._counted()
        return [Observation(sum(backlog.pending for backlog in counted))] if counted else []

    def _oldest_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        counted = self._counted()
        now = datetime.now(UTC)
        return [Observation(max(backlog.age_seconds(now) for backlog in counted))] if counted else []


_global: list[_Relays] = []
_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Relays] = weakref.WeakKeyDictionary()


def backlog_gauge(meter_provider: MeterProvider | None = None) -> BacklogGauge:
    """A gauge for one relay, reported through `meter_provider` (default: the global one)."""
    if meter_provider is None:
        if not _global:
            _global.append(_Relays(metrics.get_meter(__name__)))
        relays = _global[0]
    else:
        found = _by_provider.get(meter_provider)
        if found is None:
            found = _by_provider[meter_provider] = _Relays(meter_provider.get_meter(__name__))
        relays = found
    gauge = BacklogGauge()
    relays.gauges.add(gauge)
    return gauge
