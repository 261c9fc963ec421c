"""Context extraction with a fast path for what almost every message and request carries.

`propagate.extract` runs each configured propagator over the carrier, and W3C trace context
through a regular expression: about 12 µs a call. With the default propagators (tracecontext,
baggage) and a carrier holding only a canonical version-00 `traceparent`, the header is read
here by slicing; anything else (other propagators, tracestate, baggage, an unusual header) goes
through the propagators as before, so the result is always theirs.

The default propagators are recognised by what they show publicly: the W3C headers as their
only fields, and the same context as the fast path from a sample traceparent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.propagators.textmap import TextMapPropagator

__all__ = ["extract"]

_HEX = frozenset("0123456789abcdef")
# The fields of tracecontext,baggage (the default) and of tracecontext alone.
_W3C_FIELDS = ({"traceparent", "tracestate", "baggage"}, {"traceparent", "tracestate"})
_SAMPLES = (
    "00-94e183f1b16ada326cb26ac1602aaaa4-d543bcb7bc77533d-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
)
# The global propagator last seen, and whether it is one of the defaults.
_seen: tuple[TextMapPropagator | None, bool] = (None, False)


def _is_default(textmap: TextMapPropagator) -> bool:
    global _seen
    if _seen[0] is not textmap:
        _seen = (textmap, _reads_like_w3c(textmap))
    return _seen[1]


def _reads_like_w3c(textmap: TextMapPropagator) -> bool:
    """Whether `textmap` reads only the W3C headers, and a lone traceparent as the fast path does."""
    if set(textmap.fields) not in _W3C_FIELDS:
        return False
    for header in _SAMPLES:
        theirs = trace.get_current_span(textmap.extract({"traceparent": header})).get_span_context()
        if theirs != _canonical_traceparent(header) or theirs.is_remote is not True:
            return False
    return True


def _canonical_traceparent(header: Any) -> SpanContext | None:
    """The span context of `00-<32 hex>-<16 hex>-<2 hex>`, or None for any other value."""
    if not (
        isinstance(header, str)
        and len(header) == 55
        and header.startswith("00-")
        and header[35] == "-"
        and header[52] == "-"
        and _HEX.issuperset(header[3:35])
        and _HEX.issuperset(header[36:52])
        and _HEX.issuperset(header[53:])
    ):
        return None
    trace_id, span_id = int(header[3:35], 16), int(header[36:52], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(header[53:], 16)))


def extract(carrier: Mapping[str, Any]) -> Context:
    """The context the global propagators would extract from `carrier` (a dict of headers)."""
    textmap = propagate.get_global_textmap()
    if not _is_default(textmap) or "baggage" in carrier or "tracestate" in carrier:
        return textmap.extract(carrier)
    header = carrier.get("traceparent")
    if header is None:
        return Context()
    span_context = _canonical_traceparent(header)
    if span_context is None:
        return textmap.extract(carrier)
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())
