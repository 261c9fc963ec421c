import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from lantern_runtime.telemetry import JsonLogFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    log_record = logging.LogRecord("orders.api", logging.INFO, __file__, 1, message, None, None)
    log_record.__dict__.update(extra)
    return log_record


def test_a_line_written_inside_a_span_carries_its_trace_and_span_ids() -> None:
    formatter = JsonLogFormatter("orders")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(formatter.format(record("placed", order_id="o-1")))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["service"] == "orders"
    assert line["order_id"] == "o-1"
    assert line["message"] == "placed"


def test_a_line_outside_any_span_has_no_trace_ids() -> None:
    line = json.loads(JsonLogFormatter("orders").format(record("idle")))
    assert "trace_id" not in line
