"""The waterfall `lantern trace` and `make traces` print: tree, common time axis, colours, errors."""

from __future__ import annotations

import re

from lantern_cli.waterfall import MAX_LABEL_WIDTH, render_waterfall, service_colour
from lantern_runtime.trace_contract import Span

MS = 1_000_000
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def span(
    span_id: str, parent: str | None, service: str, name: str, start_ms: int, end_ms: int, **kw: object
) -> Span:
    return Span(
        trace_id="ab" * 16,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=str(kw.get("kind", "server")),
        service=service,
        start_ns=1_700_000_000_000 * MS + start_ms * MS,
        end_ns=1_700_000_000_000 * MS + end_ms * MS,
        error=bool(kw.get("error", False)),
    )


FLOW = [
    span("1", None, "gateway", "POST /api/orders", 0, 100),
    span("3", "2", "orders", "POST /api/orders", 10, 40),
    span("2", "1", "gateway", "POST", 5, 50, kind="client"),
    span("4", "3", "orders", "publish order.created", 30, 35, kind="producer"),
    span("5", "4", "payments", "process order.created", 50, 100, kind="consumer", error=True),
]


def rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ms  |" in line]


def bar_of(row: str) -> str:
    return row[row.index("|") + 1 : row.rindex("|")]


def test_spans_are_drawn_depth_first_with_tree_branches() -> None:
    drawn = rows(render_waterfall(FLOW, width=20))
    expected = [
        "gateway  POST /api/orders [server]",
        "└─ gateway  POST [client]",
        "   └─ orders  POST /api/orders [server]",
        "      └─ orders  publish order.created [producer]",
        "         └─ payments  process order.created [consumer]",
    ]
    assert [row[: len(label)] for row, label in zip(drawn, expected, strict=True)] == expected


def test_bars_share_one_time_axis() -> None:
    text = render_waterfall(FLOW, width=20)
    drawn = rows(text)
    assert bar_of(drawn[0]) == "█" * 20  # the root spans the whole trace
    assert bar_of(drawn[1]) == " " + "█" * 9 + " " * 10  # 5..50 ms of 100
    assert bar_of(drawn[3]) == " " * 6 + "█" + " " * 13  # 30..35 ms
    assert bar_of(drawn[4]) == " " * 10 + "█" * 10  # 50..100 ms
    assert "0 ms" in text.splitlines()[2] and "100.0 ms|" in text.splitlines()[2]
    assert "  10.0 ms    30.0 ms  |" in drawn[2]  # offset and duration


def test_errors_are_counted_and_marked() -> None:
    text = render_waterfall(FLOW, width=20)
    assert text.splitlines()[0] == f"trace {'ab' * 16}  5 spans  3 services  100.0 ms  1 error(s)"
    marked = [row for row in rows(text) if row.endswith("✗ ERROR")]
    assert len(marked) == 1 and "payments" in marked[0]


def test_colours_only_when_asked_and_one_per_service() -> None:
    assert not ANSI.search(render_waterfall(FLOW))
    coloured = render_waterfall(FLOW, color=True, width=20)
    assert f"\x1b[{service_colour('gateway')}mgateway\x1b[0m" in coloured
    assert f"\x1b[{service_colour('orders')}m" in coloured
    assert "\x1b[1;31m✗ ERROR" in coloured
    # Colours change nothing else: the plain text is the same.
    assert ANSI.sub("", coloured) == render_waterfall(FLOW, width=20)
    flow = ("gateway", "orders", "payments", "bank", "notifier")
    assert len({service_colour(s) for s in flow}) == 5
    assert service_colour("shipping") == service_colour("shipping")


def test_a_span_whose_parent_is_missing_is_drawn_as_a_root() -> None:
    orphan = [*FLOW[:1], span("9", "absent", "notifier", "process order.confirmed", 60, 70, kind="consumer")]
    labels = [row.split("  ")[0] for row in rows(render_waterfall(orphan, width=10))]
    assert labels == ["gateway", "notifier"]


def test_degenerate_traces_and_long_names() -> None:
    assert render_waterfall([]) == "(no spans)"
    instant = render_waterfall([span("1", None, "bank", "GET", 5, 5)], width=10)
    assert bar_of(rows(instant)[0]) == "█" + " " * 9
    long = render_waterfall([span("1", None, "bank", "x" * 200, 0, 1)], width=10)
    [row] = rows(long)
    assert "…" in row and row.index("|") <= MAX_LABEL_WIDTH + 30


def test_siblings_get_branches_and_a_rule_down_to_the_last() -> None:
    spans = [
        span("1", None, "payments", "process order.created", 0, 100, kind="consumer"),
        span("2", "1", "payments", "POST", 10, 40, kind="client"),
        span("3", "2", "bank", "POST /authorizations", 15, 35),
        span("4", "1", "payments", "publish payment.authorized", 50, 60, kind="producer"),
    ]
    starts = [row.split(" [")[0] for row in rows(render_waterfall(spans, width=10))]
    assert starts == [
        "payments  process order.created",
        "├─ payments  POST",
        "│  └─ bank  POST /authorizations",
        "└─ payments  publish payment.authorized",
    ]
