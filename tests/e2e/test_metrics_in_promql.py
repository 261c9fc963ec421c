"""The platform's metrics in a real PromQL store: after a burst of orders, each on-call question
is one PromQL query with an answer, under the conventions' names and labels, and the chart's
dead-letter alert fires once a poison message is dead-lettered, not before.

The services send OTLP straight into VictoriaMetrics (tests/metrics_store.py), as the chart's
collector forwards them; it scrapes RabbitMQ's own endpoint for the queues, as the chart's
Prometheus does. vmalert evaluates the chart's rule file against it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import pytest

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import DEFAULT_PORTS, Stack
from order_flow.topology import NOTIFIER_QUEUE, ORDER_FLOW, ORDERS_QUEUE, PAYMENTS_QUEUE
from tests.metrics_store import (
    Unavailable,
    rabbitmq_prometheus_unavailable,
    rabbitmq_scrape_job,
    victoria_metrics,
    vmalert,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.metrics_store import AlertEvaluator, MetricsStore

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "charts" / "lantern" / "files" / "prometheus" / "alerts.yml"
BURST = 30
SMALL_ORDER = {"items": [{"sku": "lamp", "quantity": 1, "unit_price": "19.90"}]}
# Over the bank's limit: declined, so the order is cancelled; both outcomes reach the notifier.
LARGE_ORDER = {"items": [{"sku": "sofa", "quantity": 1, "unit_price": "1500.00"}]}
WORK_QUEUES = [queue.name for queue in ORDER_FLOW.queues]
DEAD_QUEUE = PAYMENTS_QUEUE.dead_name


def per_queue(vector: str) -> str:
    """`vector` with a `queue` label: the queue is the last part of a consumer's
    messaging.destination.name, `{exchange}:{routing key}:{queue}` (the conventions' form)."""
    return f'label_replace({vector}, "queue", "$1", "messaging_destination_name", "(?:.*:)?([^:]+)")'


@dataclass
class Platform:
    stack: Stack
    store: MetricsStore
    alerts: AlertEvaluator
    vhost: str
    statuses: dict[str, str]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if (why := rabbitmq_prometheus_unavailable()) is not None:
        pytest.skip(why)
    if not RULES.exists():
        pytest.skip(f"no alert rules at {RULES}")
    workdir = tmp_path_factory.mktemp("metrics")
    with fresh_vhost() as amqp_url, ExitStack() as running:
        vhost = unquote(urlsplit(amqp_url).path[1:])
        try:
            store = running.enter_context(victoria_metrics(workdir, [rabbitmq_scrape_job(vhost)]))
        except Unavailable as why:
            pytest.skip(str(why))
        alerts = running.enter_context(vmalert(workdir, store, RULES))
        stack = Stack(
            tmp_path_factory.mktemp("platform"),
            ports={service: free_port() for service in DEFAULT_PORTS},
            amqp_url=amqp_url,
            sink_port=free_port(),
            extra_env={
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": store.otlp_metrics_url,
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
            # The burst's status polls must not be refused by the per-client rate limit.
            service_env={"gateway": {"GATEWAY_RATE_LIMIT": "1000"}},
        )
        running.enter_context(stack.running(timeout=60))
        statuses = burst_of_orders(stack)
        yield Platform(stack, store, alerts, vhost, statuses)


def burst_of_orders(stack: Stack) -> dict[str, str]:
    """BURST orders through the gateway, one in three over the bank's limit; their final statuses."""
    with httpx.Client(base_url=stack.url("gateway"), timeout=10, headers=stack.auth_headers()) as gateway:
        # One order first, and two export intervals: every series then has a sample before the
        # burst, so a rate sees the burst's increase (a series' first sample is no increase).
        warm_up = gateway.post(
            "/api/orders", json=SMALL_ORDER, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert warm_up.status_code == 202, warm_up.text
        deadline = time.monotonic() + 30
        while gateway.get(f"/api/orders/{warm_up.json()['order_id']}").json()["status"] == "pending":
            assert time.monotonic() < deadline, "the warm-up order did not settle"
            time.sleep(0.2)
        time.sleep(2.5)
        order_ids = []
        for n in range(BURST):
            body = LARGE_ORDER if n % 3 == 0 else SMALL_ORDER
            response = gateway.post("/api/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
            assert response.status_code == 202, response.text
            order_ids.append(response.json()["order_id"])
        deadline = time.monotonic() + 60
        statuses: dict[str, str] = {}
        while True:
            for order_id in order_ids:
                if statuses.get(order_id, "pending") == "pending":
                    statuses[order_id] = gateway.get(f"/api/orders/{order_id}").json()["status"]
            if "pending" not in statuses.values() or time.monotonic() > deadline:
                return statuses
            time.sleep(0.25)


async def publish_poison(amqp_url: str) -> None:
    """An order.created whose body is not one: payments dead-letters it at once."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("lantern.events")
        await exchange.publish(
            aio_pika.Message(
                b'{"order_id": "x", "total": "not a number"',
                message_id=f"poison-{uuid.uuid4().hex[:8]}",
                type="order.created",
                content_type="application/json",
            ),
            routing_key="order.created",
        )


def dead_letters_firing(platform: Platform) -> list[str]:
    """The queues of this run's vhost that LanternDeadLetters fires for (the broker is shared)."""
    return sorted(
        alert["labels"]["queue"]
        for alert in platform.alerts.alerts("LanternDeadLetters")
        if alert["state"] == "firing" and alert["labels"].get("vhost") == platform.vhost
    )


@pytest.fixture(scope="module")
def dead_letter_alert(platform: Platform) -> tuple[list[str], list[str]]:
    """What LanternDeadLetters fired for on the store's view of this run's queues: before a
    poison message (the dead queue seen empty), and once it is dead-lettered."""
    depth = f'rabbitmq_detailed_queue_messages{{vhost="{platform.vhost}", queue="{DEAD_QUEUE}"}}'
    seen = platform.store.wait_for(depth, lambda r: bool(r))
    assert [float(s["value"][1]) for s in seen] == [0.0], f"{DEAD_QUEUE} before the poison: {seen}"
    platform.alerts.evaluated_after("LanternDeadLetters", datetime.now(UTC))
    before = dead_letters_firing(platform)

    asyncio.run(publish_poison(platform.stack.amqp_url))
    seen = platform.store.wait_for(depth, lambda r: bool(r) and float(r[0]["value"][1]) == 1)
    assert [float(s["value"][1]) for s in seen] == [1.0], f"{DEAD_QUEUE} after the poison: {seen}"
    platform.alerts.evaluated_after("LanternDeadLetters", datetime.now(UTC))
    return before, dead_letters_firing(platform)


def test_the_dead_letter_alert_fires_once_a_poison_message_is_dead_lettered_and_not_before(
    dead_letter_alert: tuple[list[str], list[str]],
) -> None:
    before, after = dead_letter_alert
    assert before == []
    assert after == [DEAD_QUEUE]


# Each on-call question as one PromQL query (the README's Telemetry section shows the same).
RED = {
    "HTTP requests per second, per service": (
        "sum by (service_name) (rate(http_server_request_duration_seconds_count[5m]))"
    ),
    "HTTP p95 seconds, per service": (
        "histogram_quantile(0.95, sum by (le, service_name)"
        " (rate(http_server_request_duration_seconds_bucket[5m])))"
    ),
    "messages processed per second, per queue": (
        f"sum by (queue) ({per_queue('rate(messaging_process_duration_seconds_count[5m])')})"
    ),
    "messages failed, per queue": (
        "sum by (queue) (" + per_queue('messaging_process_duration_seconds_count{error_type!=""}') + ")"
    ),
    "processing p95 seconds, per queue": (
        "histogram_quantile(0.95, sum by (le, queue)"
        f" ({per_queue('rate(messaging_process_duration_seconds_bucket[5m])')}))"
    ),
    "messages sent, per service": "sum by (service_name) (messaging_client_sent_messages_total)",
    "publishes per second, per service": (
        "sum by (service_name) (rate(messaging_client_operation_duration_seconds_count[5m]))"
    ),
    "queue depth, per queue": 'sum by (queue) (rabbitmq_detailed_queue_messages{vhost="$vhost"})',
    "consumers, per queue": 'sum by (queue) (rabbitmq_detailed_queue_consumers{vhost="$vhost"})',
    "outbox rows unsent, per service": "max by (service_name) (lantern_outbox_pending)",
    "outbox oldest unsent row, seconds, per service": (
        "max by (service_name) (lantern_outbox_oldest_age_seconds)"
    ),
}


def answered(
    platform: Platform,
    question: str,
    by: str,
    expected: set[str],
    until: Callable[[dict[str, float]], bool] = lambda answer: True,
) -> dict[str, float]:
    """The question's answer by label `by`, once every one of `expected` has a value and `until`
    holds for it, or as it is after the store's wait (metrics are exported every second, the
    store serves them a moment later, and a rate needs two samples of a series)."""
    # RabbitMQ is shared: this run's queues are those of its own vhost.
    expr = RED[question].replace("$vhost", platform.vhost)

    def by_label(result: list[dict[str, Any]]) -> dict[str, float]:
        return {s["metric"].get(by, ""): float(s["value"][1]) for s in result}

    def done(result: list[dict[str, Any]]) -> bool:
        answer = by_label(result)
        return expected <= set(answer) and until(answer)

    answer = by_label(platform.store.wait_for(expr, done))
    print(f"{question}:\n  {expr}\n  -> {answer}")
    return answer


def test_promql_answers_each_red_question_per_service_and_per_queue_after_a_burst(
    platform: Platform, dead_letter_alert: tuple[list[str], list[str]]
) -> None:
    assert sorted(platform.statuses.values()) == ["cancelled"] * 10 + ["confirmed"] * 20
    http = {"gateway", "orders", "bank"}
    queues = {PAYMENTS_QUEUE.name, ORDERS_QUEUE.name, NOTIFIER_QUEUE.name}
    with_outbox = {"orders", "payments"}

    def positive(names: set[str]) -> Callable[[dict[str, float]], bool]:
        return lambda answer: all(answer.get(name, 0) > 0 for name in names)

    rate = answered(platform, "HTTP requests per second, per service", "service_name", http, positive(http))
    assert all(rate[service] > 0 for service in http), rate
    p95 = answered(platform, "HTTP p95 seconds, per service", "service_name", http, positive(http))
    assert all(0 < p95[service] < 5 for service in http), p95

    processed = answered(
        platform, "messages processed per second, per queue", "queue", queues, positive(queues)
    )
    assert all(processed[queue] > 0 for queue in queues), processed
    # The poison is the one failed message, payments'; a failure is a point with error.type.
    failed = answered(
        platform,
        "messages failed, per queue",
        "queue",
        {PAYMENTS_QUEUE.name},
        lambda answer: answer == {PAYMENTS_QUEUE.name: 1.0},
    )
    assert failed == {PAYMENTS_QUEUE.name: 1.0}
    process_p95 = answered(platform, "processing p95 seconds, per queue", "queue", queues, positive(queues))
    assert all(0 < process_p95[queue] < 5 for queue in queues), process_p95

    # Each order: order.created and its outcome from orders, the payment result from payments.
    sent = answered(platform, "messages sent, per service", "service_name", with_outbox)
    assert sent["orders"] >= 2 * BURST, sent
    assert sent["payments"] >= BURST, sent
    published = answered(
        platform, "publishes per second, per service", "service_name", with_outbox, positive(with_outbox)
    )
    assert all(published[service] > 0 for service in with_outbox), published

    # From RabbitMQ's endpoint: the work queues drained, each with its consumer.
    depth = answered(platform, "queue depth, per queue", "queue", {*WORK_QUEUES, DEAD_QUEUE})
    assert {queue: depth[queue] for queue in WORK_QUEUES} == dict.fromkeys(WORK_QUEUES, 0.0)
    assert depth[DEAD_QUEUE] == 1.0
    consumers = answered(platform, "consumers, per queue", "queue", set(WORK_QUEUES))
    assert all(consumers[queue] >= 1 for queue in WORK_QUEUES), consumers

    pending = answered(platform, "outbox rows unsent, per service", "service_name", with_outbox)
    assert pending == dict.fromkeys(with_outbox, 0.0)
    age = answered(platform, "outbox oldest unsent row, seconds, per service", "service_name", with_outbox)
    assert age == dict.fromkeys(with_outbox, 0.0)


# The attributes the semantic conventions allow on each metric (Prometheus-style names).
MESSAGING_ATTRIBUTES = {
    "messaging_system",
    "messaging_operation_name",
    "messaging_operation_type",
    "messaging_destination_name",
    "messaging_destination_template",
    "messaging_destination_subscription_name",
    "messaging_consumer_group_name",
    "error_type",
    "server_address",
    "server_port",
}
HTTP_SERVER_ATTRIBUTES = {
    "http_request_method",
    "http_response_status_code",
    "http_route",
    "url_scheme",
    "network_protocol_name",
    "network_protocol_version",
    "server_address",
    "server_port",
    "error_type",
}
MESSAGING_METRICS = (
    "messaging_process_duration_seconds",
    "messaging_client_operation_duration_seconds",
    "messaging_client_consumed_messages_total",
    "messaging_client_sent_messages_total",
)
CONVENTIONS = {
    "http_server_request_duration_seconds": HTTP_SERVER_ATTRIBUTES,
    "http_server_request_body_size_bytes": HTTP_SERVER_ATTRIBUTES,
    "http_server_response_body_size_bytes": HTTP_SERVER_ATTRIBUTES,
    "http_server_active_requests": {"http_request_method", "url_scheme", "server_address", "server_port"},
    "messaging_process_duration_seconds": MESSAGING_ATTRIBUTES,
    "messaging_client_operation_duration_seconds": MESSAGING_ATTRIBUTES,
    "messaging_client_consumed_messages_total": MESSAGING_ATTRIBUTES,
    "messaging_client_sent_messages_total": MESSAGING_ATTRIBUTES,
    "lantern_outbox_pending": set(),
    "lantern_outbox_oldest_age_seconds": set(),
}
# Required by the conventions (a point with an error also has error_type).
MESSAGING_REQUIRED = {"messaging_system", "messaging_operation_name", "messaging_destination_name"}
REQUIRED_ATTRIBUTES = {
    "http_server_request_duration_seconds": {"http_request_method", "http_response_status_code"},
    **{name: MESSAGING_REQUIRED for name in MESSAGING_METRICS},
}
# What the RED queries read, so what must be there.
REQUIRED = [
    "http_server_request_duration_seconds",
    "messaging_process_duration_seconds",
    "messaging_client_operation_duration_seconds",
    "messaging_client_consumed_messages_total",
    "messaging_client_sent_messages_total",
    "lantern_outbox_pending",
    "lantern_outbox_oldest_age_seconds",
]
PER_PROCESS = {"service_instance_id", "k8s_pod_uid", "process_pid"}


def family(name: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", name)


def prometheus_name(key: str) -> str:
    return key.replace(".", "_")


def test_metric_names_and_labels_are_the_conventions_and_none_is_per_process(platform: Platform) -> None:
    store = platform.store
    names = set(httpx.get(f"{store.url}/api/v1/label/__name__/values", timeout=10).json()["data"])
    missing = {name for name in REQUIRED if not any(family(n) == name for n in names)}
    assert not missing, f"no such metric in the store: {sorted(missing)}; it has {sorted(names)}"

    # The store makes every resource attribute a label. lantern.outbox.pending has no attributes
    # of its own, so its labels are the resource's, the same keys for every service. In the chart
    # the collector keeps a bounded list of them (below); what data points carry is the rest.
    [outbox] = store.series('lantern_outbox_pending{service_name="orders"}')
    resource = set(outbox) - {"__name__"}
    assert "service_instance_id" in resource, resource
    wrong: dict[str, set[str]] = {}
    for series in store.series('{__name__=~"http_server_.*|messaging_.*|lantern_outbox_.*"}'):
        name = family(series["__name__"])
        point_labels = set(series) - resource - {"__name__", "le"}
        if not point_labels <= CONVENTIONS.get(name, set()):
            wrong.setdefault(name, set()).update(point_labels - CONVENTIONS.get(name, set()))
        lacking = REQUIRED_ATTRIBUTES.get(name, set()) - point_labels
        assert not lacking, f"{name} lacks the conventions' required {lacking}: {series}"
    assert wrong == {}, f"labels on data points that the conventions do not name: {wrong}"
    assert_collector_drops_per_process_resource_attributes()


def assert_collector_drops_per_process_resource_attributes() -> None:
    """The chart's collector keeps only a bounded list of resource attributes on the services'
    metrics: none of them is per process or per pod uid."""
    config = (REPO_ROOT / "charts" / "lantern" / "files" / "collector.yaml").read_text()
    found = re.search(
        r"transform/service_metrics_resource:.*?keep_keys\(attributes, \[([^\]]*)\]\)", config, re.S
    )
    assert found, "the collector's transform/service_metrics_resource has no keep_keys list"
    kept = {prometheus_name(key.strip().strip('"')) for key in found.group(1).split(",")}
    assert "service_name" in kept
    assert not kept & PER_PROCESS, kept
