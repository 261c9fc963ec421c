"""A LeanSpan records what the SDK's span records, for every call Lantern or a handler makes, and
reaches the processors as an ordinary ReadableSpan."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.sdk.trace import ReadableSpan as SDKReadableSpan
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lantern_runtime.telemetry.propagation import extract
from lantern_runtime.telemetry.spans import LeanSpan
from lantern_runtime.telemetry.tracer import LeanTracer, SdkTracing, lean_tracer

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.sdk.trace.sampling import Sampler

SAMPLED_PARENT = "00-94e183f1b16ada326cb26ac1602aaaa4-d543bcb7bc77533d-01"
UNSAMPLED_PARENT = "00-94e183f1b16ada326cb26ac1602aaaa4-d543bcb7bc77533d-00"


class CountingIds(IdGenerator):
    """The same ids for both tracers, so their spans can be compared whole."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return self.next << 64


def provider_with(
    sampler: Sampler | None = None, limits: SpanLimits | None = None
) -> tuple[SdkTracing, InMemorySpanExporter]:
    tracing = SdkTracing.build(
        sampler=sampler, id_generator=CountingIds(), limits=limits, shutdown_on_exit=False
    )
    exporter = InMemorySpanExporter()
    # Added to the provider after it was built: lean spans reach it all the same.
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing, exporter


def comparable(span: SDKReadableSpan) -> dict[str, Any]:
    """Everything a span records, but the clock."""
    return {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, dict(e.attributes or {}), e.dropped_attributes) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
    }


def both(
    scenario: Callable[[trace.Tracer], None],
    sampler: Sampler | None = None,
    limits: SpanLimits | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spans the scenario records with the SDK's tracer and with a LeanTracer."""
    results = []
    for make in (lambda t: t.provider.get_tracer("lantern.test"), lambda t: LeanTracer(t, "lantern.test")):
        tracing, exporter = provider_with(sampler, limits)
        scenario(make(tracing))
        results.append([comparable(span) for span in exporter.get_finished_spans()])
    return results[0], results[1]


def consumer_and_children(tracer: trace.Tracer) -> None:
    parent = propagate.extract({"traceparent": SAMPLED_PARENT, "tracestate": "vendor=a1"})
    span = tracer.start_span(
        "process order.created",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "rabbitmq", "messaging.message.id": "m-1", "count": 3},
    )
    span.set_attribute("lantern.attempt", 2)
    span.set_attributes({"names": ["a", "b"], "ratio": 0.5, "flag": False, "": "no key", "gone": None})
    span.add_event("message.retry_scheduled", {"attempt": 2, "reason": "timeout"})
    span.add_link(SpanContext(7, 8, is_remote=True), {"link.kind": "follows"})
    span.add_link(trace.INVALID_SPAN_CONTEXT)
    span.record_exception(ValueError("bad total"), {"extra": "x"})
    span.set_status(Status(StatusCode.ERROR, "bad total"))
    span.set_status(StatusCode.UNSET)
    span.update_name("process order.created (retried)")
    with trace.use_span(span, end_on_exit=True):
        child = tracer.start_span(
            "publish order.confirmed", kind=SpanKind.PRODUCER, links=[Link(span.get_span_context())]
        )
        child.set_status(StatusCode.OK)
        child.set_status(StatusCode.ERROR, "too late: OK is final")
        child.end()
    span.set_attribute("after.end", True)
    span.add_event("after end")
    with tracer.start_as_current_span("root") as root:
        root.set_attribute("key", "value")
    with pytest.raises(KeyError), tracer.start_as_current_span("fails"):
        raise KeyError("order-1")


def without_stacktraces(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for span in spans:
        for _, attributes, _ in span["events"]:
            # The frames differ: the SDK's and Lantern's record_exception are called from
            # different places. The text of the exception is compared.
            attributes["exception.stacktrace"] = attributes.get("exception.stacktrace", "").split("\n")[-2:]
    return spans


def test_a_lean_span_records_what_the_sdk_span_records() -> None:
    sdk, lean = both(consumer_and_children)
    assert len(sdk) == 4
    assert without_stacktraces(lean) == without_stacktraces(sdk)


def test_limits_bound_attributes_events_and_links_as_the_sdk_does() -> None:
    limits = SpanLimits(
        max_span_attributes=3,
        max_events=2,
        max_links=1,
        max_event_attributes=1,
        max_link_attributes=1,
        max_span_attribute_length=4,
    )

    def crowded(tracer: trace.Tracer) -> None:
        span = tracer.start_span("crowded", attributes={"a": "long value", "b": 2})
        for i in range(4):
            span.set_attribute(f"k{i}", i)
        span.set_attribute("b", "again")
        for i in range(3):
            span.add_event(f"e{i}", {"x": 1, "y": 2})
        for i in range(2):
            span.add_link(SpanContext(9, 10 + i, is_remote=False), {"p": 1, "q": 2})
        span.end()

    sdk, lean = both(crowded, limits=limits)
    assert lean == sdk
    assert lean[0]["dropped_attributes"] > 0 and lean[0]["dropped_events"] == 1


@pytest.mark.parametrize(
    ("sampler", "traceparent"),
    [
        (ALWAYS_ON, UNSAMPLED_PARENT),
        (ALWAYS_OFF, SAMPLED_PARENT),
        (ParentBased(ALWAYS_ON), SAMPLED_PARENT),
        (ParentBased(ALWAYS_ON), UNSAMPLED_PARENT),
        (ParentBased(ALWAYS_ON), None),
        (ParentBased(ALWAYS_OFF), None),
        (ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), UNSAMPLED_PARENT),
        (TraceIdRatioBased(0.5), None),
    ],
)
def test_sampling_decides_as_the_sdk_tracer_does(sampler: Sampler, traceparent: str | None) -> None:
    def spans(tracer: trace.Tracer) -> list[trace.Span]:
        parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
        made = [tracer.start_span(f"s{i}", context=parent) for i in range(20)]
        for span in made:
            span.end()
        return made

    made: dict[str, list[trace.Span]] = {}
    sdk, lean = both(lambda tracer: made.setdefault(type(tracer).__name__, spans(tracer)), sampler=sampler)
    assert lean == sdk
    assert [s.get_span_context() for s in made["LeanTracer"]] == [
        s.get_span_context() for s in made["Tracer"]
    ]


def test_ending_twice_exports_once() -> None:
    tracing, exporter = provider_with()
    span = LeanTracer(tracing, "lantern.test").start_span("once")
    span.end()
    span.end()
    assert len(exporter.get_finished_spans()) == 1
    assert isinstance(span, LeanSpan) and not span.is_recording()


class Recorder(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[SDKReadableSpan] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        # As with the SDK's span, a processor may enrich the live span at start.
        span.set_attribute("enriched.at_start", span.name)
        self.started.append(span)

    def on_end(self, span: SDKReadableSpan) -> None:
        self.ended.append(span)


def test_processors_get_the_live_span_at_start_and_a_plain_readable_span_at_the_end() -> None:
    tracing, _ = provider_with()
    recorder = Recorder()
    tracing.provider.add_span_processor(recorder)
    span = LeanTracer(tracing, "lantern.test").start_span("work", attributes={"a": 1})
    span.end()
    assert recorder.started == [span]
    [ended] = recorder.ended
    assert type(ended) is SDKReadableSpan
    assert dict(ended.attributes or {}) == {"a": 1, "enriched.at_start": "work"}
    assert ended.resource is tracing.provider.resource


def test_a_provider_built_elsewhere_or_disabled_gets_its_own_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its limits and processors are private to it: the SDK's tracer, not a lean one.
    assert not isinstance(lean_tracer(TracerProvider(), "x"), LeanTracer)
    assert not isinstance(lean_tracer(trace.NoOpTracerProvider(), "x"), LeanTracer)
    assert isinstance(lean_tracer(provider_with()[0], "x"), LeanTracer)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not isinstance(lean_tracer(provider_with()[0], "x"), LeanTracer)


CARRIERS = [
    {"traceparent": SAMPLED_PARENT},
    {"traceparent": UNSAMPLED_PARENT},
    {"traceparent": SAMPLED_PARENT.upper()},
    {"traceparent": SAMPLED_PARENT + "-extra"},
    {"traceparent": "01" + SAMPLED_PARENT[2:] + "-future"},
    {"traceparent": "ff" + SAMPLED_PARENT[2:]},
    {"traceparent": "00-" + "0" * 32 + SAMPLED_PARENT[35:]},
    {"traceparent": SAMPLED_PARENT[:36] + "0" * 16 + SAMPLED_PARENT[52:]},
    {"traceparent": SAMPLED_PARENT.replace("-", "_")},
    {"traceparent": SAMPLED_PARENT[:3] + "+" + SAMPLED_PARENT[4:]},
    {"traceparent": SAMPLED_PARENT[:40] + "_" + SAMPLED_PARENT[41:]},
    {"traceparent": SAMPLED_PARENT[:-2] + "0A"},
    {"traceparent": " " + SAMPLED_PARENT[:-1]},
    {"traceparent": ""},
    {"traceparent": SAMPLED_PARENT, "tracestate": "vendor=a1,other=b2"},
    {"traceparent": SAMPLED_PARENT, "baggage": "user=alice"},
    {"baggage": "user=alice"},
    {"x-lantern-attempt": 2},
    {},
]


@pytest.mark.parametrize("carrier", CARRIERS)
def test_extract_finds_what_the_propagators_find(carrier: dict[str, Any]) -> None:
    expected, got = propagate.extract(carrier), extract(carrier)
    assert (
        trace.get_current_span(got).get_span_context() == trace.get_current_span(expected).get_span_context()
    )
    assert baggage.get_all(got) == baggage.get_all(expected)


def test_extract_follows_configured_propagators(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fixed(propagate.textmap.TextMapPropagator):  # type: ignore[misc]
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            span = NonRecordingSpan(SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1)))
            return trace.set_span_in_context(span)

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            pass

        @property
        def fields(self) -> set[str]:
            return set()

    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", Fixed())
    found = trace.get_current_span(extract({"traceparent": SAMPLED_PARENT})).get_span_context()
    assert (found.trace_id, found.span_id) == (1, 2)


def test_a_consumer_span_keeps_the_message_baggage_for_its_handler() -> None:
    tracing, _ = provider_with()
    tracer = LeanTracer(tracing, "lantern.test")
    parent = extract({"traceparent": SAMPLED_PARENT, "baggage": "tenant=t-1"})
    span = tracer.start_span("process", context=parent, kind=SpanKind.CONSUMER)
    with trace.use_span(span, end_on_exit=True):
        pass
    assert baggage.get_baggage("tenant", trace.set_span_in_context(span, parent)) == "t-1"
