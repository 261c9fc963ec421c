"""Consuming a work queue: dispatch by event type, retry with delay, dead-letter what cannot succeed.

A handler either returns (the message is acknowledged) or raises:
- PoisonMessage, or a body that does not fit the event's model: dead-lettered at once, since
  no retry can make it valid;
- anything else: sent to the queue's delay queue with an exponential, jittered TTL, and after
  `max_delivery_attempts` dead-lettered with the reason.
If even that publish fails, the delivery is rejected and RabbitMQ dead-letters it itself, so a
message is never dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from faststream.rabbit import RabbitMessage
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import ValidationError

from lantern_runtime.backoff import full_jitter_delay
from lantern_runtime.messaging.deadlines import HandlerDeadlines
from lantern_runtime.messaging.topology import DEAD_LETTER_EXCHANGE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from faststream.rabbit import RabbitBroker

    from lantern_runtime.messaging.publisher import Event
    from lantern_runtime.messaging.topology import QueueSpec
    from lantern_runtime.settings import BrokerSettings

logger = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-lantern-attempt"
REASON_HEADER = "x-lantern-reason"
QUEUE_HEADER = "x-lantern-queue"
ORIGIN_TRACEPARENT_HEADER = "x-lantern-origin-traceparent"


class PoisonMessage(Exception):
    """A message that can never be processed, whatever the retries."""


class HandlerTimedOut(TimeoutError):
    """The handler ran past the subscriber's time limit and was cancelled."""


@dataclass(frozen=True)
class Delivery:
    """What a handler knows of the message beyond its event."""

    message_id: str
    correlation_id: str | None
    attempt: int
    max_attempts: int

    @property
    def last_attempt(self) -> bool:
        """True when failing now sends the message to the dead-letter queue: a handler may
        then prefer a compensating outcome over a dead letter."""
        return self.attempt >= self.max_attempts


@dataclass(frozen=True)
class Consumer:
    """One event type on a queue: its model and the handler that applies it."""

    model: type[Event]
    handle: Callable[[Any, Delivery], Awaitable[None]]


async def _whole_message(msg: RabbitMessage) -> RabbitMessage:
    # The handler is given the message itself as its "body": handlers validate the body with
    # their own model, so FastStream need not parse it. Both this decoder and the handler take
    # the message without FastStream's dependency injection, which would run a plain function
    # (a decoder, or the Context field behind a `message: RabbitMessage` parameter) in a worker
    # thread: two thread hops per message, most of the cost of consuming one.
    return msg


def subscribe(
    broker: RabbitBroker,
    spec: QueueSpec,
    consumers: Mapping[str, Consumer],
    settings: BrokerSettings,
) -> None:
    """Register one FastStream subscriber on the work queue, dispatching on the message type."""
    queue = spec.work_queue()
    policy = _FailurePolicy(broker, spec, settings)
    deadlines = HandlerDeadlines(settings.handler_timeout)

    @broker.subscriber(queue, decoder=_whole_message)
    async def on_message(delivered: Any) -> None:
        message: RabbitMessage = delivered
        raw = message.raw_message
        attempt = 1
        try:
            attempt = _attempt_of(message.headers)
            consumer = consumers.get(raw.type or "")
            if consumer is None:
                known = ", ".join(sorted(consumers))
                raise PoisonMessage(
                    f"message type {raw.type!r} has no handler on {spec.name}; expected one of {known}"
                )
            try:
                event = consumer.model.model_validate_json(message.body)
            except ValidationError as error:
                raise PoisonMessage(
                    f"body is not a valid {raw.type}: {error.errors(include_url=False)}"
                ) from error
            delivery = Delivery(
                message.message_id, message.correlation_id, attempt, settings.max_delivery_attempts
            )
            watch = deadlines.watch()
            try:
                await consumer.handle(event, delivery)
            except BaseException as error:
                if deadlines.leave(watch, error):
                    raise HandlerTimedOut(f"handler exceeded {settings.handler_timeout}s") from error
                raise
            deadlines.leave(watch, None)
        except PoisonMessage as error:
            _mark_span_failed(error)
            await policy.dead_letter(message, reason=str(error), attempts=attempt)
        except Exception as error:
            # A handler's own TimeoutError (a call it made timed out) is an ordinary failure with
            # its own reason; only HandlerTimedOut says the handler ran past its limit.
            _mark_span_failed(error)
            await policy.retry_or_dead_letter(message, error, attempt)


def _attempt_of(headers: Mapping[str, Any]) -> int:
    """Which attempt this delivery is, from the header Lantern's retries and replays set.

    A value that is not a whole number of at least 1 did not come from Lantern: the message is
    poison (dead-lettered at once, with the value in its reason) rather than read as attempt 1.
    Guessing would hide whatever wrote it and could retry a message without end; dead-lettered,
    it is kept whole, seen, and one `replay` away from attempt 1."""
    value = headers.get(ATTEMPT_HEADER, 1)
    attempt: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        attempt = value
    elif isinstance(value, str | bytes) and value.strip().isdigit():
        attempt = int(value)
    if attempt is None or attempt < 1:
        raise PoisonMessage(
            f"the {ATTEMPT_HEADER} header is {value!r}; it must be a whole number of at least 1"
        )
    return attempt


def _mark_span_failed(error: BaseException) -> None:
    span = trace.get_current_span()
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error)))


class _FailurePolicy:
    def __init__(self, broker: RabbitBroker, spec: QueueSpec, settings: BrokerSettings) -> None:
        self._broker = broker
        self._spec = spec
        self._settings = settings

    async def retry_or_dead_letter(self, message: RabbitMessage, error: Exception, attempt: int) -> None:
        reason = f"{type(error).__name__}: {error}" if str(error) else repr(error)
        if attempt >= self._settings.max_delivery_attempts:
            await self.dead_letter(message, reason=reason, attempts=attempt)
            return
        delay_ms = max(
            1,
            round(
                full_jitter_delay(
                    attempt,
                    base=self._settings.retry_base_delay_ms,
                    cap=self._settings.retry_max_delay_ms,
                )
            ),
        )
        logger.warning(
            "retrying message",
            extra={
                "queue": self._spec.name,
                "message_id": message.message_id,
                "attempt": attempt,
                "delay_ms": delay_ms,
                "reason": reason,
            },
        )
        trace.get_current_span().add_event(
            "message.retry_scheduled", {"attempt": attempt, "delay_ms": delay_ms, "reason": reason}
        )
        await self._republish(
            message,
            exchange="",
            routing_key=self._spec.retry_name,
            headers={ATTEMPT_HEADER: attempt + 1},
            expiration=timedelta(milliseconds=delay_ms),
        )

    async def dead_letter(self, message: RabbitMessage, *, reason: str, attempts: int) -> None:
        logger.error(
            "dead-lettering message",
            extra={
                "queue": self._spec.name,
                "message_id": message.message_id,
                "message_type": message.raw_message.type,
                "attempts": attempts,
                "reason": reason,
            },
        )
        trace.get_current_span().add_event("message.dead_lettered", {"reason": reason})
        await self._republish(
            message,
            exchange=DEAD_LETTER_EXCHANGE.name,
            routing_key=self._spec.name,
            headers={
                REASON_HEADER: reason[:1000],
                QUEUE_HEADER: self._spec.name,
                ATTEMPT_HEADER: attempts,
            },
        )

    async def _republish(
        self,
        message: RabbitMessage,
        *,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
        expiration: timedelta | None = None,
    ) -> None:
        raw = message.raw_message
        merged = dict(message.headers)
        if "traceparent" in merged:
            merged.setdefault(ORIGIN_TRACEPARENT_HEADER, merged["traceparent"])
        merged.update(headers)
        await self._broker.publish(
            message.body,
            exchange=exchange or None,
            routing_key=routing_key,
            headers=merged,
            message_id=message.message_id,
            message_type=raw.type,
            correlation_id=message.correlation_id,
            content_type=raw.content_type,
            persist=True,
            mandatory=True,
            expiration=expiration,
            timeout=self._settings.publish_timeout,
        )
