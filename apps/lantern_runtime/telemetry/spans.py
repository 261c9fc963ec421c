"""Lean spans for the spans Lantern makes on every message and request.

The SDK's span guards every field with a lock, validates each attribute into a BoundedAttributes
(a lock and an OrderedDict of its own), and builds two bounded lists per span: about 55 µs from
start to end in a tight loop, and three times that between the frames of a consumer, where the
interpreter's caches are cold. A LeanSpan is an API span with plain fields, started and ended with
the provider's own sampler, id generator, limits and processors (telemetry/tracer.py). Processors
get the live span at start, as the SDK gives them its own, and at the end an ordinary
ReadableSpan made with its public constructor, so every processor and exporter takes it. Lantern's
spans live on the event loop's thread, so no lock is needed; attributes set later (by a handler)
are still cleaned and bounded as the SDK's, by the SDK's own BoundedAttributes.
"""

from __future__ import annotations

import logging
import traceback
from time import time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.util import types

    from lantern_runtime.telemetry.tracer import LeanTracer

__all__ = ["LeanSpan"]

_logger = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_PLAIN_VALUES = frozenset((str, bool, int, float))


def _make_room(entries: list[Any], limit: int | None) -> int:
    """Make room for one more entry as the SDK's BoundedList does, dropping the oldest of a full
    list; how many were dropped (1 also when the limit is 0 and nothing may be kept)."""
    if limit is None or len(entries) < limit:
        return 0
    if entries:
        del entries[0]
    return 1


def _bounded(entries: list[Any], limit: int | None, dropped: int) -> Sequence[Any]:
    """The entries of an ended span as ReadableSpan reads them: a BoundedList when some were
    dropped (that is how it counts them), the list itself otherwise (nothing changes it now)."""
    if not dropped:
        return entries
    bounded = BoundedList.from_seq(limit, entries)
    bounded.dropped = dropped
    return bounded


class LeanSpan(trace.Span):
    """A recording span with plain fields; see the module's docstring."""

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[trace.Link],
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._status = _UNSET
        self._start_time = start_time if start_time is not None else time_ns()
        self._end_time: int | None = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._events: list[Event] = []
        self._dropped_events = 0
        self._links: list[trace.Link] = []
        self._dropped_links = 0
        for link in links:
            self.add_link(link.context, link.attributes)
        self._dropped_attributes = 0
        limits = tracer.limits
        if (
            limits.max_span_attribute_length is None
            and len(attributes) <= (limits.max_span_attributes or 0)
            and _PLAIN_VALUES.issuperset(map(type, attributes.values()))
        ):
            # Lantern's own attributes: strings and numbers, already clean.
            self._attributes = attributes
        else:
            self._attributes = {}
            self._merge(attributes, initial=True)

    # What a processor may read of the live span at start, as of the SDK's span.
    @property
    def name(self) -> str:
        return self._name

    @property
    def context(self) -> SpanContext:
        return self._context

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def kind(self) -> SpanKind:
        return self._kind

    @property
    def start_time(self) -> int:
        return self._start_time

    @property
    def end_time(self) -> int | None:
        return self._end_time

    @property
    def status(self) -> Status:
        return self._status

    @property
    def attributes(self) -> types.Attributes:
        return MappingProxyType(self._attributes)

    @property
    def events(self) -> Sequence[Event]:
        return tuple(self._events)

    @property
    def links(self) -> Sequence[trace.Link]:
        return tuple(self._links)

    @property
    def resource(self) -> Resource:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    def readable(self) -> ReadableSpan:
        """What the span recorded, as the SDK's ReadableSpan."""
        limits = self._tracer.limits
        attributes: types.Attributes = self._attributes
        if self._dropped_attributes:
            # ReadableSpan counts dropped attributes only in a BoundedAttributes.
            bounded = BoundedAttributes(limits.max_span_attributes, self._attributes)
            bounded.dropped = self._dropped_attributes
            attributes = bounded
        return ReadableSpan(
            name=self._name,
            context=self._context,
            parent=self._parent,
            resource=self._tracer.resource,
            attributes=attributes,
            events=_bounded(self._events, limits.max_events, self._dropped_events),
            links=_bounded(self._links, limits.max_links, self._dropped_links),
            kind=self._kind,
            status=self._status,
            start_time=self._start_time,
            end_time=self._end_time,
            instrumentation_scope=self._tracer.scope,
        )

    # The API's span.
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            _logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._tracer.processor.on_end(self.readable())

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            _logger.warning("Setting attribute on ended span.")
            return
        self._merge(attributes, initial=False)

    def _merge(self, attributes: Mapping[str, types.AnyValue], *, initial: bool) -> None:
        limits = self._tracer.limits
        max_length = limits.max_span_attribute_length
        if max_length is not None or not _PLAIN_VALUES.issuperset(map(type, attributes.values())):
            # Keys checked and values cleaned (sequences to tuples, strings cut, other types to
            # str) by the SDK's own BoundedAttributes, as its span does: the initial attributes
            # at once, later ones one by one.
            if initial:
                cleaned = BoundedAttributes(None, attributes, max_value_len=max_length)
            else:
                cleaned = BoundedAttributes(None, immutable=False, max_value_len=max_length)
                for key, value in attributes.items():
                    cleaned[key] = value
            self._dropped_attributes += cleaned.dropped
            attributes = cleaned
        # A full span drops its oldest attribute, as BoundedAttributes does.
        current = self._attributes
        limit = limits.max_span_attributes
        for key, value in attributes.items():
            if not key or not isinstance(key, str):
                _logger.warning("invalid key `%s`. must be non-empty string. Dropping it.", key)
                self._dropped_attributes += 1
                continue
            current.pop(key, None)
            if limit is not None and len(current) >= limit:
                if not current:
                    self._dropped_attributes += 1
                    continue
                del current[next(iter(current))]
                self._dropped_attributes += 1
            current[key] = value

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            _logger.warning("Adding an event to an ended span.")
            return
        limits = self._tracer.limits
        dropped = _make_room(self._events, limits.max_events)
        self._dropped_events += dropped
        if dropped and not limits.max_events:
            return
        bounded = BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length
        )
        self._events.append(Event(name, bounded, timestamp if timestamp is not None else time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is not None:
            _logger.warning("Adding a link to an ended span.")
            return
        # As the SDK: a link to an invalid context is kept only if it carries something.
        if not (context.is_valid or attributes or context.trace_state):
            return
        limits = self._tracer.limits
        dropped = _make_room(self._links, limits.max_links)
        self._dropped_links += dropped
        if dropped and not limits.max_links:
            return
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length
        )
        self._links.append(trace.Link(context, bounded))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, and UNSET never overrides.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        event: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()
