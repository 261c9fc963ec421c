"""The shape one order's trace must have, defined once for the e2e test, `helm test` and tools.

A trace satisfies the contract when it has one root, no span whose parent is missing, every
service of the flow, messaging attributes on every producer and consumer span, and the causal
chain below, where each step's span descends from the span of the step it names as `within`:

gateway → orders → publish → payments consume → bank (and, beside it, publish) → orders
consume → publish → notifier consume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = (
    "server",
    "client",
    "producer",
    "consumer",
    "internal",
)
OTLP_KINDS = {1: INTERNAL, 2: SERVER, 3: CLIENT, 4: PRODUCER, 5: CONSUMER}


@dataclass(frozen=True)
class Span:
    """A span reduced to what the contract reads, whatever format it came in."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    error: bool = False
    # The instrumentation scope that made it, and its resource's attributes, where known.
    scope: str = ""
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True)
class Step:
    label: str
    service: str
    kind: str
    # The label of the earlier step whose span this one must descend from.
    within: str | None
    # For messaging spans: the event type (routing key) that must appear in the span.
    event: str | None = None

    def matches(self, span: Span) -> bool:
        if span.service != self.service or span.kind != self.kind:
            return False
        if self.event is None:
            return True
        return self.event in (
            span.attributes.get("messaging.rabbitmq.destination.routing_key"),
            span.attributes.get("lantern.event.type"),
        )

    def __str__(self) -> str:
        return self.label


def order_flow_chain(outcome: str) -> tuple[Step, ...]:
    """The chain of an order whose payment is `authorized` (confirmed) or `declined` (cancelled)."""
    if outcome not in ("authorized", "declined"):
        raise ValueError(f"outcome must be 'authorized' or 'declined', got {outcome!r}")
    final = "order.confirmed" if outcome == "authorized" else "order.cancelled"
    paid = f"payment.{outcome}"
    return (
        Step("gateway receives POST", "gateway", SERVER, None),
        Step("gateway calls orders", "gateway", CLIENT, "gateway receives POST"),
        Step("orders receives the order", "orders", SERVER, "gateway calls orders"),
        Step(
            "orders publishes order.created",
            "orders",
            PRODUCER,
            "orders receives the order",
            "order.created",
        ),
        Step(
            "payments consumes order.created",
            "payments",
            CONSUMER,
            "orders publishes order.created",
            "order.created",
        ),
        Step("payments calls bank", "payments", CLIENT, "payments consumes order.created"),
        Step("bank authorizes", "bank", SERVER, "payments calls bank"),
        Step(
            f"payments publishes {paid}",
            "payments",
            PRODUCER,
            "payments consumes order.created",
            paid,
        ),
        Step(f"orders consumes {paid}", "orders", CONSUMER, f"payments publishes {paid}", paid),
        Step(f"orders publishes {final}", "orders", PRODUCER, f"orders consumes {paid}", final),
        Step(f"notifier consumes {final}", "notifier", CONSUMER, f"orders publishes {final}", final),
    )


SERVICES = ("gateway", "orders", "payments", "bank", "notifier")
# The messaging conventions' attributes every producer and consumer span has, and the
# deprecated one it must not have (renamed messaging.operation.type).
MESSAGING_ATTRIBUTES = (
    "messaging.system",
    "messaging.destination.name",
    "messaging.operation.name",
    "messaging.operation.type",
)
DEPRECATED_ATTRIBUTES = ("messaging.operation",)


def check_trace(spans: Iterable[Span], chain: tuple[Step, ...]) -> list[str]:
    """Every way the spans break the contract; an empty list means the trace is whole."""
    spans = list(spans)
    if not spans:
        return ["the trace has no spans"]
    problems: list[str] = []
    trace_ids = {span.trace_id for span in spans}
    if len(trace_ids) != 1:
        problems.append(f"spans belong to {len(trace_ids)} traces, not one: {sorted(trace_ids)}")
    by_id = {span.span_id: span for span in spans}
    roots = [span for span in spans if not span.parent_span_id]
    if len(roots) != 1:
        problems.append(
            f"the trace has {len(roots)} roots, not one: {[f'{s.service}: {s.name}' for s in roots]}"
        )
    for span in spans:
        if span.parent_span_id and span.parent_span_id not in by_id:
            problems.append(f"orphan span {span.service}: {span.name!r} (parent {span.parent_span_id})")
    missing = sorted(set(SERVICES) - {span.service for span in spans})
    if missing:
        problems.append(f"services missing from the trace: {missing}")
    for span in spans:
        if span.kind in (PRODUCER, CONSUMER):
            absent = [key for key in MESSAGING_ATTRIBUTES if key not in span.attributes]
            if absent:
                problems.append(f"{span.service}: {span.name!r} lacks messaging attributes {absent}")
            elif span.attributes["messaging.system"] != "rabbitmq":
                problems.append(f"{span.service}: {span.name!r} has messaging.system != rabbitmq")
        deprecated = [key for key in DEPRECATED_ATTRIBUTES if key in span.attributes]
        if deprecated:
            problems.append(f"{span.service}: {span.name!r} has deprecated attributes {deprecated}")
    problems.extend(_check_chain(spans, by_id, chain))
    return problems


def _ancestors(span: Span, by_id: dict[str, Span]) -> Iterable[Span]:
    seen: set[str] = set()
    while span.parent_span_id and span.parent_span_id in by_id and span.span_id not in seen:
        seen.add(span.span_id)
        span = by_id[span.parent_span_id]
        yield span


def _check_chain(spans: list[Span], by_id: dict[str, Span], chain: tuple[Step, ...]) -> list[str]:
    matched: dict[str, set[str]] = {}
    for step in chain:
        within = matched.get(step.within, set()) if step.within else None
        found = {
            span.span_id
            for span in spans
            if step.matches(span)
            and (within is None or any(a.span_id in within for a in _ancestors(span, by_id)))
        }
        if not found:
            where = f" inside {step.within!r}" if step.within else ""
            return [f"the chain breaks at {step.label!r}: no {step.service} {step.kind} span{where}"]
        matched[step.label] = found
    return []


def render_tree(spans: Iterable[Span]) -> str:
    """The trace as an indented tree: service, span name, kind, duration and errors."""
    spans = sorted(spans, key=lambda span: span.start_ns)
    children: dict[str | None, list[Span]] = {}
    ids = {span.span_id for span in spans}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        flag = "  ERROR" if span.error else ""
        lines.append(
            f"{'  ' * depth}{span.service}: {span.name} [{span.kind}] {span.duration_ms:.1f} ms{flag}"
        )
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)
