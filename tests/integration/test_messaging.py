"""Consumers on the real broker: retries with delay, dead letters with their reason and trace,
and the declared topology."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, ClassVar

import pytest

from lantern_runtime.messaging import (
    CurrentDelivery,
    EventPublisher,
    PoisonMessage,
    QueueSpec,
    Topology,
    build_broker,
    deadletters,
    declare_topology,
    event_type,
    start_broker,
    work_queue_subscriber,
)
from lantern_runtime.messaging.consumer import ATTEMPT_HEADER, REASON_HEADER
from lantern_runtime.messaging.publisher import Event
from lantern_runtime.messaging.topology import DELIVERY_LIMIT
from lantern_runtime.settings import BrokerSettings
from tests.integration.conftest import drain, queues_in

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from faststream.rabbit import RabbitBroker
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lantern_runtime.messaging import Delivery

pytestmark = pytest.mark.rabbitmq

QUEUE = QueueSpec("tests.widgets", ("widget.made",))


class WidgetMade(Event):
    event_type: ClassVar[str] = "widget.made"
    widget_id: str


def settings(amqp_url: str, attempts: int = 3) -> BrokerSettings:
    return BrokerSettings(
        amqp_url=amqp_url,
        max_delivery_attempts=attempts,
        handler_timeout=0.5,
        retry_base_delay_ms=20,
        retry_max_delay_ms=100,
    )


@pytest.fixture
async def running(
    amqp_url: str,
) -> AsyncIterator[Callable[[Callable[[WidgetMade, Delivery], object]], object]]:
    brokers: list[RabbitBroker] = []

    async def start(handle: Callable[[WidgetMade, Delivery], object]) -> RabbitBroker:
        config = settings(amqp_url)
        broker = build_broker(config, "tests")
        widgets = work_queue_subscriber(broker, QUEUE, config)

        @widgets(filter=event_type(WidgetMade))
        async def on_widget_made(event: WidgetMade, delivery: CurrentDelivery) -> None:
            await handle(event, delivery)  # type: ignore[misc]

        await declare_topology(amqp_url, Topology((QUEUE,)))
        await start_broker(broker, Topology((QUEUE,)), config)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        await broker.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the handlers under test own no Event to await
            await asyncio.sleep(0.02)


async def test_the_topology_is_durable_quorum_queues_with_a_delivery_limit_and_dead_letters(
    amqp_url: str, running: Callable[..., object]
) -> None:
    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        return None

    await running(handle)  # type: ignore[operator]
    queues = queues_in(amqp_url)
    work = queues["tests.widgets"]
    assert work["type"] == "quorum"
    assert work["durable"] is True
    assert work["arguments"]["x-delivery-limit"] == DELIVERY_LIMIT
    assert work["arguments"]["x-dead-letter-exchange"] == "lantern.dead-letters"
    assert queues["tests.widgets.retry"]["arguments"]["x-dead-letter-routing-key"] == "tests.widgets"
    assert queues["tests.widgets.dead"]["type"] == "classic"  # no delivery limit: see test_dead_letters


async def test_a_failing_message_is_retried_with_delay_then_applied_once(
    running: Callable[..., object],
) -> None:
    attempts: list[int] = []
    applied: list[str] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if len(attempts) < 3:
            raise ConnectionError("upstream flaked")
        applied.append(event.widget_id)

    broker = await running(handle)  # type: ignore[operator]
    await EventPublisher(broker).publish(WidgetMade(widget_id="w-1"), message_id="m-1")  # type: ignore[arg-type]
    await wait_for(lambda: applied == ["w-1"])
    await asyncio.sleep(0.3)
    assert attempts == [1, 2, 3]
    assert applied == ["w-1"]


async def test_a_message_that_keeps_failing_is_dead_lettered_with_its_reason_after_the_attempts(
    amqp_url: str, running: Callable[..., object]
) -> None:
    attempts: list[int] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("the warehouse is on fire")

    broker = await running(handle)  # type: ignore[operator]
    await EventPublisher(broker).publish(WidgetMade(widget_id="w-2"), message_id="m-2")  # type: ignore[arg-type]
    [dead] = await drain(amqp_url, QUEUE.dead_name, expect=1)
    assert attempts == [1, 2, 3]
    assert dead.message_id == "m-2"
    assert dead.headers[ATTEMPT_HEADER] == 3
    assert "the warehouse is on fire" in str(dead.headers[REASON_HEADER])
    assert json.loads(dead.body) == {"widget_id": "w-2"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not json at all", "not a valid widget.made"), (b'{"wrong": 1}', "widget_id")],
    ids=["not-json", "wrong-schema"],
)
async def test_a_poison_message_is_dead_lettered_with_its_trace_while_others_keep_flowing(
    amqp_url: str,
    running: Callable[..., object],
    spans: InMemorySpanExporter,
    body: bytes,
    reason: str,
) -> None:
    applied: list[str] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        applied.append(event.widget_id)

    broker = await running(handle)  # type: ignore[operator]
    publisher = EventPublisher(broker)  # type: ignore[arg-type]
    await publisher.publish_raw(body, event_type="widget.made", message_id="poison")
    await publisher.publish(WidgetMade(widget_id="fine"), message_id="fine")
    [dead] = await drain(amqp_url, QUEUE.dead_name, expect=1)
    await wait_for(lambda: applied == ["fine"])
    assert dead.message_id == "poison"
    assert dead.body == body
    assert reason in str(dead.headers[REASON_HEADER])
    assert dead.headers[ATTEMPT_HEADER] == 1  # poison is never retried
    origin = str(dead.headers["x-lantern-origin-traceparent"])
    published = next(
        s for s in spans.get_finished_spans() if s.attributes.get("messaging.message.id") == "poison"
    )
    assert origin.split("-")[1] == format(published.context.trace_id, "032x")


async def test_a_message_with_an_unknown_type_is_poison(
    amqp_url: str, running: Callable[..., object]
) -> None:
    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        raise AssertionError("must not be called")

    broker = await running(handle)  # type: ignore[operator]
    await broker.publish(  # type: ignore[attr-defined]
        b"{}", queue=QUEUE.name, message_type="widget.melted", message_id="odd", persist=True
    )
    [dead] = await drain(amqp_url, QUEUE.dead_name, expect=1)
    assert "'widget.melted' has no handler" in str(dead.headers[REASON_HEADER])


def test_poison_message_is_an_exception_handlers_can_raise() -> None:
    assert issubclass(PoisonMessage, Exception)


async def test_dead_letters_are_listed_and_replayed_onto_their_queue_once(
    amqp_url: str, running: Callable[..., object]
) -> None:
    fixed = False
    applied: list[tuple[str, int]] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        if not fixed:
            raise RuntimeError("bug in the handler")
        applied.append((event.widget_id, delivery.attempt))

    broker = await running(handle)  # type: ignore[operator]
    await EventPublisher(broker).publish(WidgetMade(widget_id="w-9"), message_id="m-9")  # type: ignore[arg-type]
    letters: list[deadletters.DeadLetter] = []
    async with asyncio.timeout(10):
        while not letters:
            letters = await deadletters.list_dead_letters(amqp_url, [QUEUE.name])
            await asyncio.sleep(0.05)
    assert [(d.message_id, d.attempts) for d in letters] == [("m-9", 3)]
    assert "bug in the handler" in letters[0].reason
    # Listing leaves them in place.
    assert len(await deadletters.list_dead_letters(amqp_url, [QUEUE.name])) == 1

    fixed = True
    assert await deadletters.replay(amqp_url, QUEUE.name) == 1
    await wait_for(lambda: applied == [("w-9", 1)])
    assert await deadletters.list_dead_letters(amqp_url, [QUEUE.name]) == []


async def test_a_handler_that_hangs_is_timed_out_retried_and_dead_lettered(
    amqp_url: str, running: Callable[..., object]
) -> None:
    attempts: list[int] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        await asyncio.sleep(3600)

    broker = await running(handle)  # type: ignore[operator]
    await EventPublisher(broker).publish(WidgetMade(widget_id="w-h"), message_id="m-h")  # type: ignore[arg-type]
    [dead] = await drain(amqp_url, QUEUE.dead_name, expect=1)
    assert attempts == [1, 2, 3]
    assert "handler exceeded 0.5s" in str(dead.headers[REASON_HEADER])


async def test_a_handlers_own_timeout_error_is_an_ordinary_failure_with_its_own_reason(
    amqp_url: str, running: Callable[..., object]
) -> None:
    attempts: list[int] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise TimeoutError("the bank did not answer within 2 s")

    broker = await running(handle)  # type: ignore[operator]
    await EventPublisher(broker).publish(WidgetMade(widget_id="w-t"), message_id="m-t")  # type: ignore[arg-type]
    [dead] = await drain(amqp_url, QUEUE.dead_name, expect=1)
    assert attempts == [1, 2, 3]
    reason = str(dead.headers[REASON_HEADER])
    assert "the bank did not answer within 2 s" in reason
    assert "handler exceeded" not in reason


@pytest.mark.parametrize("attempt", ["abc", "0", -3, 2.5], ids=["text", "zero", "negative", "fraction"])
async def test_a_malformed_attempt_header_is_dead_lettered_with_a_reason_and_a_log_line(
    amqp_url: str, running: Callable[..., object], caplog: pytest.LogCaptureFixture, attempt: object
) -> None:
    called: list[str] = []

    async def handle(event: WidgetMade, delivery: Delivery) -> None:
        called.append(event.widget_id)

    broker = await running(handle)  # type: ignore[operator]
    await broker.publish(  # type: ignore[attr-defined]
        b'{"widget_id": "w-a"}',
        queue=QUEUE.name,
        message_type="widget.made",
        message_id="m-a",
        headers={ATTEMPT_HEADER: attempt},
        persist=True,
    )
    [dead] = await drain(amqp_url, QUEUE.dead_name, expect=1)
    reason = str(dead.headers[REASON_HEADER])
    assert ATTEMPT_HEADER in reason and repr(attempt) in reason
    assert called == []
    assert any(
        record.getMessage() == "dead-lettering message" and getattr(record, "message_id", None) == "m-a"
        for record in caplog.records
    )
