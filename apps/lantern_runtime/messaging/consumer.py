"""What happens to a message on a work queue besides its handler: retry with delay, dead letters
with reasons, the handler's time limit. A FastStream middleware (`DeliveryPolicy`), so handlers
stay plain typed subscribers.

A handler either returns (the message is acknowledged) or raises:
- PoisonMessage, or a body that does not fit the handler's model (not JSON, wrong schema), or a
  type no handler of the queue filters for, or a malformed attempt header: dead-lettered at once,
  since no retry can make it valid;
- anything else (and running past `handler_timeout`): sent to the queue's delay queue with an
  exponential, jittered TTL, and after `max_delivery_attempts` dead-lettered with the reason.
If even that publish fails, the delivery is rejected and RabbitMQ dead-letters it itself, so a
message is never dropped silently.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from faststream import BaseMiddleware, Depends
from faststream.exceptions import SubscriberNotFound
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from pydantic import ValidationError

from lantern_runtime.backoff import full_jitter_delay
from lantern_runtime.messaging.deadlines import HandlerDeadlines
from lantern_runtime.messaging.tracing import mark_failed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping
    from types import TracebackType

    from aio_pika.abc import AbstractIncomingMessage
    from faststream import ContextRepo
    from faststream.message import StreamMessage
    from faststream.rabbit.publisher import RabbitPublisher

    from lantern_runtime.messaging.topology import QueueSpec
    from lantern_runtime.settings import BrokerSettings

logger = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-lantern-attempt"
REASON_HEADER = "x-lantern-reason"
QUEUE_HEADER = "x-lantern-queue"
ORIGIN_TRACEPARENT_HEADER = "x-lantern-origin-traceparent"
# Who first published a message that a consumer sent on to a delay or dead queue: the message's
# user_id, which RabbitMQ checked; the republished copy carries the consumer's own.
PUBLISHER_HEADER = "x-lantern-publisher"

__all__ = [
    "ATTEMPT_HEADER",
    "ORIGIN_TRACEPARENT_HEADER",
    "PUBLISHER_HEADER",
    "QUEUE_HEADER",
    "REASON_HEADER",
    "CurrentDelivery",
    "Delivery",
    "DeliveryPolicy",
    "HandlerTimedOut",
    "PoisonMessage",
    "current_delivery",
]


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


# The delivery the current task is handling. A ContextVar rather than FastStream's Context: a
# `Context()` parameter is resolved by a plain function, which FastStream's DI runs in a worker
# thread, and two thread hops cost more than the rest of a message. `current_delivery`, an async
# dependency, reads it on the event loop.
_delivery: ContextVar[Delivery] = ContextVar("lantern_delivery")


async def current_delivery() -> Delivery:
    """The delivery being handled; a FastStream dependency (see `CurrentDelivery`)."""
    try:
        return _delivery.get()
    except LookupError:
        raise LookupError(
            "no delivery in progress: CurrentDelivery works in handlers of a work_queue_subscriber"
        ) from None


# A handler's parameter: `delivery: CurrentDelivery`.
CurrentDelivery = Annotated[Delivery, Depends(current_delivery)]


class DeliveryPolicy:
    """The middleware of one work queue's subscriber: a factory FastStream calls per message.

    `retry` publishes to `<queue>.retry`, `dead` to `<queue>.dead`, each through the
    lantern.redeliveries exchange with the queue's name as routing key: both declared publishers,
    so the AsyncAPI document shows them and tests see what they were given.
    """

    def __init__(
        self,
        spec: QueueSpec,
        settings: BrokerSettings,
        *,
        retry: RabbitPublisher,
        dead: RabbitPublisher,
        event_types: Collection[str],
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.retry = retry
        self.dead = dead
        self.event_types = event_types
        self.deadlines = HandlerDeadlines(settings.handler_timeout)
        # The subscriber's handlers, by name (set once it exists): FastStream names the
        # ValidationError of a body that does not fit a handler's parameters after the handler.
        self.handler_names: Callable[[], Collection[str]] = tuple

    def is_body_error(self, error: Exception) -> bool:
        """True for an error of the body rather than of the handler: FastStream's validation of
        the handler's parameters failed (a handler's own models raise under their own names)."""
        return isinstance(error, ValidationError) and error.title in self.handler_names()

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> DeliveryMiddleware:
        return DeliveryMiddleware(msg, context=context, policy=self)

    async def retry_or_dead_letter(
        self, message: AbstractIncomingMessage, error: BaseException, attempt: int
    ) -> None:
        reason = f"{type(error).__name__}: {error}" if str(error) else repr(error)
        if attempt >= self.settings.max_delivery_attempts:
            await self.dead_letter(message, reason=reason, attempts=attempt)
            return
        delay_ms = max(
            1,
            round(
                full_jitter_delay(
                    attempt, base=self.settings.retry_base_delay_ms, cap=self.settings.retry_max_delay_ms
                )
            ),
        )
        logger.warning(
            "retrying message",
            extra={
                "queue": self.spec.name,
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
            self.retry,
            message,
            {ATTEMPT_HEADER: attempt + 1},
            expiration=timedelta(milliseconds=delay_ms),
        )

    async def dead_letter(self, message: AbstractIncomingMessage, *, reason: str, attempts: int) -> None:
        logger.error(
            "dead-lettering message",
            extra={
                "queue": self.spec.name,
                "message_id": message.message_id,
                "message_type": message.type,
                "attempts": attempts,
                "reason": reason,
            },
        )
        trace.get_current_span().add_event("message.dead_lettered", {"reason": reason})
        await self._republish(
            self.dead,
            message,
            {REASON_HEADER: reason[:1000], QUEUE_HEADER: self.spec.name, ATTEMPT_HEADER: attempts},
        )

    async def _republish(
        self,
        publisher: RabbitPublisher,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        expiration: timedelta | None = None,
    ) -> None:
        merged = dict(message.headers)
        if "traceparent" in merged:
            merged.setdefault(ORIGIN_TRACEPARENT_HEADER, merged["traceparent"])
        if message.user_id:
            merged.setdefault(PUBLISHER_HEADER, message.user_id)
        merged.update(headers)
        await publisher.publish(
            message.body,
            headers=merged,
            message_id=message.message_id,
            message_type=message.type,
            correlation_id=message.correlation_id,
            content_type=message.content_type,
            persist=True,
            mandatory=True,
            expiration=expiration,
            timeout=self.settings.publish_timeout,
        )


class DeliveryMiddleware(BaseMiddleware):
    """Applies a DeliveryPolicy to one message (FastStream makes one per message)."""

    def __init__(self, msg: Any, /, *, context: ContextRepo, policy: DeliveryPolicy) -> None:
        super().__init__(msg, context=context)
        self.policy = policy

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        policy = self.policy
        raw: AbstractIncomingMessage = msg.raw_message
        try:
            attempt = attempt_of(msg.headers)
        except PoisonMessage as error:
            mark_failed(error)
            await policy.dead_letter(raw, reason=str(error), attempts=1)
            return None
        try:
            # Decoded here, and cached for the handler, so that a body that is not JSON is told
            # from a handler's own ValueError.
            await msg.decode()
        except ValueError as error:
            poison = PoisonMessage(f"body is not a valid {raw.type}: not JSON ({error})")
            mark_failed(poison)
            await policy.dead_letter(raw, reason=str(poison), attempts=attempt)
            return None
        token = _delivery.set(
            Delivery(msg.message_id, msg.correlation_id, attempt, policy.settings.max_delivery_attempts)
        )
        deadlines = policy.deadlines
        watch = deadlines.watch()
        try:
            result = await call_next(msg)
        except BaseException as error:
            timed_out = deadlines.leave(watch, error)
            if timed_out:
                failure: BaseException = HandlerTimedOut(
                    f"handler exceeded {policy.settings.handler_timeout}s"
                )
            elif not isinstance(error, Exception):
                raise  # cancellation (shutdown) and the like go on
            elif policy.is_body_error(error):
                failure = PoisonMessage(f"body is not a valid {raw.type}: {_describe(error)}")
            else:
                # A handler's own TimeoutError (a call it made timed out) is an ordinary failure
                # with its own reason; only HandlerTimedOut says it ran past its limit.
                failure = error
            mark_failed(failure)
            if isinstance(failure, PoisonMessage):
                await policy.dead_letter(raw, reason=str(failure), attempts=attempt)
            else:
                await policy.retry_or_dead_letter(raw, failure, attempt)
            return None
        finally:
            _delivery.reset(token)
        deadlines.leave(watch, None)
        return result

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        """A type no handler filters for never reaches consume_scope: FastStream raises
        SubscriberNotFound after trying each filter. It is poison too."""
        raw = self.msg
        if not isinstance(exc_val, SubscriberNotFound) or raw is None:
            return False
        policy = self.policy
        try:
            attempt = attempt_of(raw.headers)
        except PoisonMessage as error:
            reason, attempt = str(error), 1
        else:
            known = ", ".join(sorted(policy.event_types))
            reason = (
                f"message type {raw.type!r} has no handler on {policy.spec.name}; expected one of {known}"
            )
        # No consumer span was started for it: the dead letter and its log line join the
        # message's own trace.
        token = otel_context.attach(propagate.extract(raw.headers))
        try:
            await policy.dead_letter(raw, reason=reason, attempts=attempt)
        finally:
            otel_context.detach(token)
        return True


def attempt_of(headers: Mapping[str, Any]) -> int:
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


def _describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return str(error.errors(include_url=False, include_context=False))
    return str(error)
