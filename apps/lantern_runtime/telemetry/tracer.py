"""The tracer behind Lantern's lean spans, and the global one its messaging spans use.

A LeanTracer makes the SDK tracer's decisions with the provider's own parts: its sampler (the
stock always_on, always_off and parent-based rules are answered without a call), id generator,
resource, limits and span processors. What it leaves out: the SDK's own span metrics
(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) and the experimental per-scope tracer configurator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    TraceFlags,
)
from opentelemetry.util._decorator import _agnosticcontextmanager

from lantern_runtime.telemetry.spans import LeanSpan

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanLimits, SpanProcessor
    from opentelemetry.util import types

__all__ = ["GlobalTracer", "LeanTracer", "lean_tracer"]

_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


class LeanTracer(trace.Tracer):
    """Starts LeanSpans with an SDK provider's sampler, ids, resource, limits and processors."""

    def __init__(self, provider: SDKTracerProvider, scope: str) -> None:
        self.sampler = provider.sampler
        self.id_generator = provider.id_generator
        self.resource = provider.resource
        self.limits: SpanLimits = provider._span_limits
        self.processor: SpanProcessor = provider._active_span_processor
        self.scope = InstrumentationScope(scope, "")
        self._random_ids = self.id_generator.is_trace_id_random()
        # ParentBased with its default rules follows the parent's sampled flag.
        rules = (
            "_remote_parent_sampled",
            "_remote_parent_not_sampled",
            "_local_parent_sampled",
            "_local_parent_not_sampled",
        )
        self._stock_parent_rules = isinstance(self.sampler, ParentBased) and [
            getattr(self.sampler, rule, None) for rule in rules
        ] == [ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF]

    def _decide(self, parent: SpanContext | None) -> bool | None:
        """The decision of the SDK's stock samplers, which need not be asked: always_on,
        always_off, and parentbased_always_on under a parent. None: ask the sampler."""
        sampler = self.sampler
        if sampler is ALWAYS_ON:
            return True
        if sampler is ALWAYS_OFF:
            return False
        if parent is not None and sampler.__class__ is ParentBased and self._stock_parent_rules:
            return bool(parent.trace_flags.sampled)
        return None

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        else:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            random = self._random_ids
        links = tuple(links) if links else ()
        decided = self._decide(parent)
        if decided is None:
            sampling = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = sampling.decision is Decision.RECORD_AND_SAMPLE
            recording = sampling.decision is not Decision.DROP
            trace_state = sampling.trace_state
            attributes = sampling.attributes
        else:
            sampled = recording = decided
            trace_state = parent.trace_state if parent is not None else None
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[sampled, random],
            trace_state=trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        span = LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            dict(attributes) if attributes else {},
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]  # a ReadableSpan, as processors read it
        return span

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def lean_tracer(provider: trace.TracerProvider, scope: str) -> trace.Tracer:
    """A LeanTracer for an SDK provider; any other provider's own tracer."""
    if isinstance(provider, SDKTracerProvider) and not provider._disabled:
        return LeanTracer(provider, scope)
    return provider.get_tracer(scope)


class GlobalTracer:
    """The lean tracer of the global tracer provider, or None while no SDK provider is set
    (OTEL_SDK_DISABLED, or before setup_telemetry); looked up again only when that changes."""

    def __init__(self, scope: str) -> None:
        self._scope = scope
        self._seen: object = self
        self._tracer: trace.Tracer | None = None

    def get(self) -> trace.Tracer | None:
        # The global itself: get_tracer_provider() searches os.environ on every call until a
        # provider is set, which is every message of an untraced service.
        provider = trace._TRACER_PROVIDER
        if provider is not self._seen:
            self._seen = provider
            resolved = trace.get_tracer_provider()
            untraced = isinstance(resolved, ProxyTracerProvider | NoOpTracerProvider)
            self._tracer = None if untraced else lean_tracer(resolved, self._scope)
        return self._tracer
