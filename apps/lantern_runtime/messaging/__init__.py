"""RabbitMQ through FastStream: topology, tracing, retries with delay, dead letters and publishing."""

from lantern_runtime.messaging.broker import (
    broker_ready,
    build_broker,
    connect_broker,
    declare_topology,
    redacted_url,
    start_broker,
    stop_consuming,
)
from lantern_runtime.messaging.consumer import Consumer, PoisonMessage, subscribe
from lantern_runtime.messaging.publisher import EventPublisher, PublishFailed
from lantern_runtime.messaging.topology import EVENTS_EXCHANGE, QueueSpec, Topology

__all__ = [
    "EVENTS_EXCHANGE",
    "Consumer",
    "EventPublisher",
    "PoisonMessage",
    "PublishFailed",
    "QueueSpec",
    "Topology",
    "broker_ready",
    "build_broker",
    "connect_broker",
    "declare_topology",
    "redacted_url",
    "start_broker",
    "stop_consuming",
    "subscribe",
]
