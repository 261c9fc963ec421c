"""The trace contract accepts a whole order trace and names each way a broken one fails."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from lantern_runtime.trace_contract import (
    CONSUMER,
    PRODUCER,
    Span,
    check_trace,
    order_flow_chain,
    render_tree,
)

TRACE = "ab" * 16
_ids = (f"{n:016x}" for n in itertools.count(1))


def make_trace(outcome: str = "authorized") -> list[Span]:
    """A trace shaped the way the real flow shapes it, built from the contract's own chain."""
    spans: dict[str, Span] = {}
    for step in order_flow_chain(outcome):
        parent = spans[step.within].span_id if step.within else None
        attributes = {}
        if step.kind in (PRODUCER, CONSUMER):
            attributes = {
                "messaging.system": "rabbitmq",
                "messaging.destination.name": f"lantern.events:{step.event}",
                "messaging.operation.name": "publish" if step.kind == PRODUCER else "process",
                "messaging.operation.type": "send" if step.kind == PRODUCER else "process",
                "messaging.rabbitmq.destination.routing_key": step.event,
            }
        spans[step.label] = Span(
            TRACE,
            next(_ids),
            parent,
            f"{step.kind} {step.event or ''}".strip(),
            step.kind,
            step.service,
            attributes,
        )
    return list(spans.values())


@pytest.mark.parametrize("outcome", ["authorized", "declined"])
def test_a_whole_order_trace_satisfies_the_contract(outcome: str) -> None:
    assert check_trace(make_trace(outcome), order_flow_chain(outcome)) == []


def test_an_orphan_span_is_named() -> None:
    spans = make_trace()
    spans[4] = replace(spans[4], parent_span_id="f" * 16)
    problems = check_trace(spans, order_flow_chain("authorized"))
    assert any("orphan span payments" in problem for problem in problems)


def test_a_second_root_is_reported() -> None:
    spans = make_trace()
    spans[-1] = replace(spans[-1], parent_span_id=None)
    problems = check_trace(spans, order_flow_chain("authorized"))
    assert any("2 roots" in problem for problem in problems)


def test_spans_of_another_trace_are_reported() -> None:
    spans = make_trace()
    spans[-1] = replace(spans[-1], trace_id="cd" * 16)
    assert any("2 traces" in p for p in check_trace(spans, order_flow_chain("authorized")))


def test_a_missing_service_is_named() -> None:
    spans = [span for span in make_trace() if span.service != "notifier"]
    problems = check_trace(spans, order_flow_chain("authorized"))
    assert "services missing from the trace: ['notifier']" in problems


def test_a_messaging_span_without_its_attributes_is_reported() -> None:
    spans = make_trace()
    spans[3] = replace(spans[3], attributes={})
    problems = check_trace(spans, order_flow_chain("authorized"))
    assert any("lacks messaging attributes" in problem for problem in problems)


def test_a_messaging_span_with_the_deprecated_operation_attribute_is_reported() -> None:
    spans = make_trace()
    spans[3] = replace(spans[3], attributes={**spans[3].attributes, "messaging.operation": "publish"})
    problems = check_trace(spans, order_flow_chain("authorized"))
    assert any("has deprecated attributes ['messaging.operation']" in problem for problem in problems)


def test_a_consumer_hung_under_the_wrong_parent_breaks_the_chain() -> None:
    spans = make_trace()
    # The notifier's span attached to the gateway's root, as a broken propagation would do.
    spans[-1] = replace(spans[-1], parent_span_id=spans[0].span_id)
    problems = check_trace(spans, order_flow_chain("authorized"))
    assert problems == [
        "the chain breaks at 'notifier consumes order.confirmed': "
        "no notifier consumer span inside 'orders publishes order.confirmed'"
    ]


def test_the_declined_contract_rejects_an_authorized_trace() -> None:
    assert check_trace(make_trace("authorized"), order_flow_chain("declined")) != []


def test_the_tree_shows_every_span_indented_under_its_parent() -> None:
    tree = render_tree(make_trace()).splitlines()
    assert len(tree) == len(order_flow_chain("authorized"))
    assert tree[0].startswith("gateway: server")
    assert tree[-1].startswith("  " * 8 + "notifier: consumer order.confirmed")
