"""A statement that fails on the real PostgreSQL names its SQL but not its parameters: not in the
raised error, not in the log of the 500, not in the server span; and the 500 answer holds
none of the error's text."""

from __future__ import annotations

import logging
import traceback
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Column, MetaData, Numeric, String, Table, insert
from sqlalchemy.exc import DBAPIError

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.storage import create_engine
from lantern_runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.postgres

SECRET = "card-4111-1111-1111-1111"
# Above Numeric(14, 2): PostgreSQL refuses it with "numeric field overflow".
OVERFLOW = Decimal("98765432109876.54")
metadata = MetaData()
payments = Table(
    "payments", metadata, Column("note", String(100)), Column("total", Numeric(14, 2), nullable=False)
)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


async def overflow(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(payments).values(note=SECRET, total=OVERFLOW))


def assert_no_parameters(text: str) -> None:
    assert SECRET not in text
    assert str(OVERFLOW) not in text
    assert "98765432109876" not in text


async def test_a_failed_statements_error_names_its_sql_but_not_its_parameters(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as raised:
        await overflow(engine)
    text = "".join(traceback.format_exception(raised.value))
    assert "numeric field overflow" in text
    assert "INSERT INTO payments" in text
    assert "parameters hidden" in text
    assert_no_parameters(text)


async def test_a_failed_statement_in_a_request_is_a_bare_500_and_its_log_and_span_hold_no_parameters(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    router = APIRouter()

    @router.post("/payments")
    async def pay() -> None:
        await overflow(engine)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = service_app(
        "payments",
        readiness=Readiness({}),
        telemetry=Telemetry("payments", tracer_provider=provider),
        routers=[router],
    )
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    with caplog.at_level(logging.ERROR):
        async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
            response = await client.post("/payments")

    assert response.status_code == 500
    assert response.json()["detail"] == "an unexpected error occurred"
    assert "overflow" not in response.text and "INSERT" not in response.text
    assert_no_parameters(response.text)

    [logged] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged.exc_info is not None
    logged_text = logging.Formatter().format(logged)
    assert "numeric field overflow" in logged_text
    assert_no_parameters(logged_text)

    [span] = exporter.get_finished_spans()
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    recorded = f"{event.attributes.get('exception.message')}\n{event.attributes.get('exception.stacktrace')}"
    assert "numeric field overflow" in recorded
    assert_no_parameters(recorded + str(span.attributes) + str(span.status.description))
