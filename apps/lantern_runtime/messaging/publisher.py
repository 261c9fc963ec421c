"""Publishing events: persistent, confirmed by the broker, routable, each with a message_id."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from lantern_runtime.messaging.topology import EVENTS_EXCHANGE

if TYPE_CHECKING:
    from faststream.rabbit import RabbitBroker

logger = logging.getLogger(__name__)


class Event(BaseModel):
    """An event that happened; subclasses name it in the past tense and set `event_type`."""

    event_type: ClassVar[str]


class PublishFailed(Exception):
    """The broker did not confirm a message; it was not sent and the caller must keep it."""


class EventPublisher:
    def __init__(self, broker: RabbitBroker, *, timeout: float = 5.0) -> None:
        self._broker = broker
        self._timeout = timeout

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
        """Publish and wait for the broker's confirm; raise PublishFailed otherwise."""
        try:
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
        except Exception as error:
            # aio-pika raises on a nack, a return (unroutable) or a confirm timeout.
            raise PublishFailed(f"{event_type} {message_id} was not published: {error}") from error
