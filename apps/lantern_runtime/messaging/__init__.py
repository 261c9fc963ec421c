"""RabbitMQ through FastStream: topology, tracing, typed subscribers with retries with delay,
dead letters and time limits, declared publishers, and each service's AsyncAPI document."""

from lantern_runtime.messaging.asyncapi import asyncapi_router, messaging_app
from lantern_runtime.messaging.broker import (
    broker_ready,
    broker_user,
    build_broker,
    connect_broker,
    redacted_url,
    start_broker,
    stop_consuming,
)
from lantern_runtime.messaging.consumer import (
    CurrentDelivery,
    Delivery,
    DeliveryPolicy,
    HandlerTimedOut,
    PoisonMessage,
)
from lantern_runtime.messaging.declare import declare_topology
from lantern_runtime.messaging.publisher import (
    Event,
    EventPublisher,
    MessageTooLarge,
    PublishFailed,
    event_publisher,
)
from lantern_runtime.messaging.subscribe import event_type, work_queue_subscriber
from lantern_runtime.messaging.topology import EVENTS_EXCHANGE, QueueSpec, Topology, TopologyNotDeclared

__all__ = [
    "EVENTS_EXCHANGE",
    "CurrentDelivery",
    "Delivery",
    "DeliveryPolicy",
    "Event",
    "EventPublisher",
    "HandlerTimedOut",
    "MessageTooLarge",
    "PoisonMessage",
    "PublishFailed",
    "QueueSpec",
    "Topology",
    "TopologyNotDeclared",
    "asyncapi_router",
    "broker_ready",
    "broker_user",
    "build_broker",
    "connect_broker",
    "declare_topology",
    "event_publisher",
    "event_type",
    "messaging_app",
    "redacted_url",
    "start_broker",
    "stop_consuming",
    "work_queue_subscriber",
]
