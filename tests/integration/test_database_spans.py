"""Each statement a service runs is a CLIENT span of opentelemetry-instrumentation-sqlalchemy, in
the caller's trace, on the SQLAlchemy 2.1 Lantern runs: the instrumentation's package declares
SQLAlchemy below 2.1, and Lantern instruments it with its dependency check skipped."""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy import text

from lantern_runtime.storage import create_engine

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SCOPE = "opentelemetry.instrumentation.sqlalchemy"


def test_the_sqlalchemy_lantern_runs_is_one_the_instrumentation_does_not_declare() -> None:
    # If this fails, SQLAlchemy went back below 2.1 and skip_dep_check can go.
    assert tuple(int(part) for part in version("sqlalchemy").split(".")[:2]) >= (2, 1)


async def test_each_statement_is_a_client_span_in_the_callers_trace(
    database_url: str, spans: InMemorySpanExporter
) -> None:
    engine = create_engine(database_url)
    try:
        with trace.get_tracer("test").start_as_current_span("handler") as handler:
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE IF NOT EXISTS t_spans (n INTEGER)"))
                await connection.execute(text("INSERT INTO t_spans (n) VALUES (:n)"), {"n": 4111})
                assert (await connection.execute(text("SELECT count(*) FROM t_spans"))).scalar() == 1
    finally:
        await engine.dispose()
    statements = [
        span
        for span in spans.get_finished_spans()
        if span.instrumentation_scope is not None and span.instrumentation_scope.name == SCOPE
    ]
    texts = [str((span.attributes or {}).get("db.statement", "")) for span in statements]
    assert [t.split()[0] for t in texts if t.split()[:1] in (["CREATE"], ["INSERT"], ["SELECT"])] == [
        "CREATE",
        "INSERT",
        "SELECT",
    ]
    handler_id = handler.get_span_context().span_id
    for span in statements:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == handler_id
        assert span.context.trace_id == handler.get_span_context().trace_id
        attributes = dict(span.attributes or {})
        assert attributes.get("db.system") in ("postgresql", "sqlite")
        # The statement's text, never its parameters (customers' data).
        assert "4111" not in " ".join(str(value) for value in attributes.values())
