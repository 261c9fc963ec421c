"""The tracer behind Lantern's lean spans, and the global one its messaging spans use.

A LeanTracer makes the SDK tracer's decisions with the parts an SDK provider was built from,
all through public API: the provider's sampler, id generator and resource, and the span limits
and span processor that `SdkTracing.build` handed to the provider's constructor and kept. The
stock always_on, always_off and parent-based samplers are answered without a call. What it
leaves out: the SDK's own span metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED; with it set,
setup_telemetry uses the SDK's tracer instead) and the experimental per-scope configurator.

A provider built any other way keeps its limits and processors to itself, so it gets its own
(the SDK's) tracer: slower, never wrong.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, DEFAULT_OFF, DEFAULT_ON, Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, ProxyTracerProvider, SpanContext, SpanKind, TraceFlags

from lantern_runtime.telemetry.spans import LeanSpan

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.util import types

__all__ = ["GlobalTracer", "LeanTracer", "SdkTracing", "lean_tracer", "set_global_tracing"]

_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}
# The samplers OTEL_TRACES_SAMPLER=parentbased_always_on (the default) and parentbased_always_off
# resolve to: under a parent, both follow its sampled flag.
_FOLLOW_THE_PARENT = (DEFAULT_ON, DEFAULT_OFF)


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


@dataclass(frozen=True)
class SdkTracing:
    """An SDK TracerProvider with the span limits and the span processor it was built with.

    The processor is the provider's own (its `active_span_processor`), so a processor added
    later with `provider.add_span_processor` reaches lean spans too.
    """

    provider: TracerProvider
    limits: SpanLimits
    processor: SynchronousMultiSpanProcessor

    @classmethod
    def build(
        cls,
        *,
        resource: Resource | None = None,
        sampler: Sampler | None = None,
        id_generator: IdGenerator | None = None,
        limits: SpanLimits | None = None,
        shutdown_on_exit: bool = True,
    ) -> SdkTracing:
        """As TracerProvider(...): a sampler from OTEL_TRACES_SAMPLER and limits from
        OTEL_*_LIMIT unless given."""
        limits = limits if limits is not None else SpanLimits()
        processor = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]  # unannotated in the SDK
        provider = TracerProvider(
            sampler=sampler,
            resource=resource,
            shutdown_on_exit=shutdown_on_exit,
            active_span_processor=processor,
            id_generator=id_generator,
            span_limits=limits,
        )
        return cls(provider, limits, processor)


class LeanTracer(trace.Tracer):
    """Starts LeanSpans with an SDK provider's sampler, ids, resource, limits and processors."""

    def __init__(self, tracing: SdkTracing, scope: str) -> None:
        provider = tracing.provider
        self.sampler = provider.sampler
        self.id_generator = provider.id_generator
        self.resource = provider.resource
        self.limits = tracing.limits
        self.processor = tracing.processor
        self.scope = InstrumentationScope(scope, "")
        self._random_ids = self.id_generator.is_trace_id_random()

    def _decide(self, parent: SpanContext | None) -> bool | None:
        """The decision of the SDK's stock samplers, which need not be asked: always_on,
        always_off, and the parent-based defaults under a parent. None: ask the sampler."""
        sampler = self.sampler
        if sampler is ALWAYS_ON:
            return True
        if sampler is ALWAYS_OFF:
            return False
        if parent is not None and sampler in _FOLLOW_THE_PARENT:
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
        # Processors are handed the live span at start, as the SDK hands them its own: they may
        # read it or add attributes. At the end they get a ReadableSpan (LeanSpan.end).
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]  # typed for the SDK's Span
        return span

    # The API's own is typed with a private context manager class; this one is contextlib's.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
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


def lean_tracer(tracing: SdkTracing | trace.TracerProvider, scope: str) -> trace.Tracer:
    """A LeanTracer for an SdkTracing; any provider's own tracer (the SDK's, or a no-op one)."""
    if isinstance(tracing, SdkTracing):
        if _sdk_disabled():
            return tracing.provider.get_tracer(scope)
        return LeanTracer(tracing, scope)
    return tracing.get_tracer(scope)


class _Global:
    """What setup_telemetry made the global provider, if it could (the API sets it once)."""

    tracing: SdkTracing | None = None
    settled = False


def set_global_tracing(tracing: SdkTracing | None) -> bool:
    """Make `tracing`'s provider the global one, so GlobalTracers start lean spans with it; with
    None, settle that there is none (OTEL_SDK_DISABLED). False if another provider was global
    already: GlobalTracers then use that provider's own tracer."""
    _Global.settled = True
    if tracing is None:
        return False
    trace.set_tracer_provider(tracing.provider)
    if trace.get_tracer_provider() is not tracing.provider:
        return False
    _Global.tracing = tracing
    return True


class GlobalTracer:
    """The tracer of the global tracer provider, or None while there is none; resolved once,
    when setup_telemetry has run or the global provider has been set.

    A lean tracer when the global provider is setup_telemetry's; another provider's own tracer.
    """

    def __init__(self, scope: str) -> None:
        self._scope = scope
        self._resolved = False
        self._tracer: trace.Tracer | None = None

    def get(self) -> trace.Tracer | None:
        if self._resolved:
            return self._tracer
        provider = trace.get_tracer_provider()
        if isinstance(provider, ProxyTracerProvider):
            # No provider yet. Once setup_telemetry has said there will be none, stop asking:
            # the lookup searches os.environ on each call.
            self._resolved = _Global.settled
            return None
        self._resolved = True
        tracing = _Global.tracing
        if tracing is not None and tracing.provider is provider:
            self._tracer = lean_tracer(tracing, self._scope)
        elif not isinstance(provider, trace.NoOpTracerProvider):
            self._tracer = provider.get_tracer(self._scope)
        return self._tracer
