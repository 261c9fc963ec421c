"""A trace as a waterfall: the span tree on the left, and on a common time axis each span's
offset and duration as a bar, services coloured, errors marked.

    trace 5c4f…  11 spans  5 services  61.2 ms
                                                  offset  duration  |0 ms                  61.2 ms|
    gateway  POST /api/orders [server]            0.0 ms   35.8 ms  |████████████████          |
    └─ gateway  POST [client]                     1.2 ms   32.3 ms  | ██████████████          |
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from lantern_runtime.trace_contract import SERVICES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lantern_runtime.trace_contract import Span

# ANSI foreground colours, one per service of the flow in its order, the rest by a hash of the name.
_PALETTE = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")
_ERROR = "1;31"
_DIM = "2"
# The tree column grows with the deepest label, up to this many characters.
MAX_LABEL_WIDTH = 80
BAR = "█"


def service_colour(service: str) -> str:
    if service in SERVICES:
        return _PALETTE[SERVICES.index(service)]
    return _PALETTE[len(SERVICES) + zlib.crc32(service.encode()) % (len(_PALETTE) - len(SERVICES))]


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _tree(spans: list[Span]) -> list[tuple[Span, str]]:
    """Spans depth first, each with its tree prefix; a span whose parent is absent is a root."""
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    ordered: list[tuple[Span, str]] = []

    def walk(span: Span, prefix: str, branch: str, seen: frozenset[str]) -> None:
        ordered.append((span, prefix + branch))
        kids = [kid for kid in children.get(span.span_id, []) if kid.span_id not in seen]
        below = prefix + ("   " if branch.startswith("└") else "│  " if branch else "")
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            walk(kid, below, "└─ " if last else "├─ ", seen | {kid.span_id})

    for root in children.get(None, []):
        walk(root, "", "", frozenset({root.span_id}))
    return ordered


def render_waterfall(spans: Iterable[Span], *, color: bool = False, width: int = 40) -> str:
    spans = list(spans)
    if not spans:
        return "(no spans)"
    start = min(span.start_ns for span in spans)
    total_ns = max(max(span.end_ns for span in spans) - start, 1)
    services = sorted(
        {span.service for span in spans}, key=lambda s: min(x.start_ns for x in spans if x.service == s)
    )
    errors = sum(span.error for span in spans)
    header = (
        f"trace {spans[0].trace_id}  {len(spans)} spans  {len(services)} services  {total_ns / 1e6:.1f} ms"
        + (f"  {_paint(f'{errors} error(s)', _ERROR, color)}" if errors else "")
    )
    legend = "  ".join(_paint(f"{BAR} {service}", service_colour(service), color) for service in services)
    end_label = f"{total_ns / 1e6:.1f} ms"
    axis = "0 ms" + end_label.rjust(width - 4)
    tree = [(span, f"{prefix}{span.service}  {span.name} [{span.kind}]") for span, prefix in _tree(spans)]
    label_width = min(MAX_LABEL_WIDTH, max(len(label) for _, label in tree))
    lines = [
        header,
        legend,
        f"{'':<{label_width}}  {'offset':>9}  {'duration':>9}  |{_paint(axis, _DIM, color)}|",
    ]
    for span, label in tree:
        if len(label) > label_width:
            label = label[: label_width - 1] + "…"
        # The service name in its colour; padding counted on the plain text.
        shown = label.replace(span.service, _paint(span.service, service_colour(span.service), color), 1)
        shown += " " * (label_width - len(label))
        offset_ms = (span.start_ns - start) / 1e6
        first = min(int((span.start_ns - start) * width / total_ns), width - 1)
        last = max(first + 1, min(width, -(-(span.end_ns - start) * width // total_ns)))
        bar = _paint(BAR * (last - first), _ERROR if span.error else service_colour(span.service), color)
        mark = "  " + _paint("✗ ERROR", _ERROR, color) if span.error else ""
        lines.append(
            f"{shown}  {offset_ms:>6.1f} ms  {span.duration_ms:>6.1f} ms  "
            f"|{' ' * first}{bar}{' ' * (width - last)}|{mark}"
        )
    return "\n".join(lines)
