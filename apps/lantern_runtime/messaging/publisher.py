"""Publishing events: persistent, confirmed by the broker, routable, each with a message_id.

Each event a service emits has a publisher declared on its broker (`event_publisher`), so the
service's AsyncAPI document shows it; EventPublisher sends through them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from lantern_runtime.messaging.topology import EVENTS_EXCHANGE

if TYPE_CHECKING:
    from collections.abc import Iterable

    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.publisher import RabbitPublisher

logger = logging.getLogger(__name__)


class Event(BaseModel):
    """An event that happened; subclasses name it in the past tense and set `event_type`."""

    event_type: ClassVar[str]


class PublishFailed(Exception):
    """The broker did not confirm a message; it was not sent and the caller must keep it."""


class MessageTooLarge(PublishFailed):
    """The message's body is over the broker's max_message_size, so it was not sent: no retry
    can send it until the limit (BROKER_MAX_MESSAGE_BYTES and the broker's) is raised."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


def event_publisher(
    broker: RabbitBroker, event: type[Event], *, description: str | None = None
) -> RabbitPublisher:
    """Declare that this service emits `event`: to the events exchange, routed by its type."""
    return broker.publisher(
        exchange=EVENTS_EXCHANGE,
        routing_key=event.event_type,
        title=event.event_type,
        description=description or (event.__doc__ or "").strip() or None,
        schema=event,
        persist=True,
        mandatory=True,
        message_type=event.event_type,
        content_type="application/json",
    )


class EventPublisher:
    """Publishes through the declared publishers, by event type; an event type without one (an
    outbox row written by an older release) goes out through the broker to the same place."""

    def __init__(
        self, broker: RabbitBroker, *, timeout: float = 5.0, publishers: Iterable[RabbitPublisher] = ()
    ) -> None:
        self._broker = broker
        self._timeout = timeout
        self._publishers = {publisher.routing(): publisher for publisher in publishers}

    async def publish(
        self,
        event: Event,
        *,
        message_id: str,
        correlation_id: str | None = None,
    ) -> None:
        await self.publish_raw(
            event.model_dump_json().encode(),
            event_type=event.event_type,
            message_id=message_id,
            correlation_id=correlation_id,
        )

    async def publish_raw(
        self,
        body: bytes,
        *,
        event_type: str,
        message_id: str,
        correlation_id: str | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm; raise PublishFailed otherwise, and
        MessageTooLarge, before sending, for a body over BROKER_MAX_MESSAGE_BYTES."""
        declared = self._publishers.get(event_type)
        try:
            if declared is not None:
                await declared.publish(
                    body,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    timestamp=datetime.now(UTC),
                    timeout=self._timeout,
                )
                return
            await self._broker.publish(
                body,
                exchange=EVENTS_EXCHANGE,
                routing_key=event_type,
                message_id=message_id,
                message_type=event_type,
                correlation_id=correlation_id,
                content_type="application/json",
                persist=True,
                mandatory=True,
                timestamp=datetime.now(UTC),
                timeout=self._timeout,
            )
        except MessageTooLarge:
            raise
        except Exception as error:
            # aio-pika raises on a nack, a return (unroutable) or a confirm timeout.
            raise PublishFailed(f"{event_type} {message_id} was not published: {error}") from error
