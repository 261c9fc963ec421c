"""The chart's LanternOutboxStalled rule, evaluated by vmalert on a real store, fires for an
outbox whose relay has stopped while rows wait, and not for a backlog that is young or drained.

The gauges come from the real relay over orders' real outbox table on PostgreSQL, exported over
OTLP into VictoriaMetrics as the chart's collector forwards them. The rule file is the chart's
own (charts/lantern/files/prometheus/alerts.yml), thresholds unchanged: a row older than the
threshold is one written that long ago, so the test need not wait it out.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from sqlalchemy import update

from lantern_runtime.messaging import EventPublisher, build_broker
from lantern_runtime.settings import BrokerSettings
from lantern_runtime.storage import OutboxRelay
from orders.domain import PlaceOrder
from orders.repository import OrderRepository
from orders.tables import metadata, outbox
from tests.integration.conftest import engine_with
from tests.metrics_store import Unavailable, victoria_metrics, vmalert

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.metrics_store import AlertEvaluator, MetricsStore

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "charts" / "lantern" / "files" / "prometheus" / "alerts.yml"
ALERT = "LanternOutboxStalled"
ORDER = PlaceOrder.model_validate({"items": [{"sku": "lamp", "quantity": 1, "unit_price": "5.00"}]})
AGE = 'max by (service_name) (lantern_outbox_oldest_age_seconds{service_name="orders"})'


def stall_threshold() -> float:
    """The rule's threshold in seconds, read from the rule file the chart ships."""
    rules = yaml.safe_load(RULES.read_text())
    [expr] = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    found = re.search(r"lantern_outbox_oldest_age_seconds\)\s*>\s*([0-9.]+)", expr)
    assert found, f"{ALERT} is not a threshold on lantern_outbox_oldest_age_seconds: {expr}"
    return float(found.group(1))


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetricsStore, AlertEvaluator]]:
    if not RULES.exists():
        pytest.skip(f"no alert rules at {RULES}")
    workdir = tmp_path_factory.mktemp("metrics")
    try:
        with victoria_metrics(workdir) as store, vmalert(workdir, store, RULES) as evaluator:
            yield store, evaluator
    except Unavailable as why:
        pytest.skip(str(why))


def orders_meters(store: MetricsStore) -> MeterProvider:
    exporter = OTLPMetricExporter(endpoint=store.otlp_metrics_url)
    return MeterProvider(
        resource=Resource.create({"service.name": "orders"}),
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=300)],
        shutdown_on_exit=False,
    )


def firing(evaluator: AlertEvaluator) -> list[str]:
    return [
        alert["labels"].get("service_name", "")
        for alert in evaluator.alerts(ALERT)
        if alert["state"] == "firing"
    ]


async def evaluated_on_age(
    store: MetricsStore, evaluator: AlertEvaluator, done: Callable[[float], bool]
) -> float:
    """Once the store holds an age for which `done` holds, and the rule has been evaluated on it."""

    def wait() -> float:
        result = store.wait_for(AGE, lambda r: bool(r) and done(float(r[0]["value"][1])))
        assert result, f"the store has no {AGE}"
        evaluator.evaluated_after(ALERT, datetime.now(UTC))
        return float(result[0]["value"][1])

    # In a thread: the relay runs on this loop meanwhile.
    return await asyncio.to_thread(wait)


async def test_the_outbox_alert_fires_for_a_stopped_relay_with_an_old_row_and_not_otherwise(
    postgres_url: str, amqp_url: str, alerting: tuple[MetricsStore, AlertEvaluator]
) -> None:
    store, evaluator = alerting
    threshold = stall_threshold()
    meters = orders_meters(store)
    broker = build_broker(BrokerSettings(amqp_url=amqp_url), "orders")
    await broker.connect()
    async with engine_with(postgres_url, metadata) as engine:
        relay = OutboxRelay(engine, outbox, EventPublisher(broker), poll_seconds=0.1, meter_provider=meters)
        try:
            repository = OrderRepository(engine)
            # The relay is not running: it counts, as on a poll, and publishes nothing.
            await relay.count_backlog()
            assert await evaluated_on_age(store, evaluator, lambda age: age == 0) == 0
            assert firing(evaluator) == []

            await repository.place("c-1", ORDER, "key-young")
            await relay.count_backlog()
            assert await evaluated_on_age(store, evaluator, lambda age: age > 0) < threshold
            assert firing(evaluator) == []

            # A row written longer ago than the threshold, and nobody since has sent it.
            await repository.place("c-1", ORDER, "key-old")
            async with engine.begin() as conn:
                await conn.execute(
                    update(outbox).values(created_at=datetime.now(UTC) - timedelta(seconds=threshold + 30))
                )
            await relay.count_backlog()
            assert await evaluated_on_age(store, evaluator, lambda age: age > threshold) > threshold
            assert firing(evaluator) == ["orders"]

            # The relay runs again and drains the outbox: the alert resolves.
            relay.start()
            assert await evaluated_on_age(store, evaluator, lambda age: age == 0) == 0
            assert firing(evaluator) == []
        finally:
            await relay.stop()
            await broker.stop()
            meters.shutdown()
