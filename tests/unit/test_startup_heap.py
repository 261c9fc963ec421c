"""A service freezes what start-up built once it is ready, and its own lifespan still runs."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from fastapi import FastAPI


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_start_up_objects_are_frozen_after_the_services_own_start_up() -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        seen.append(f"started, frozen={gc.get_freeze_count()}")
        yield
        seen.append("stopped")

    app = service_app(
        "heap-test", readiness=Readiness({}), telemetry=Telemetry("heap-test"), lifespan=lifespan
    )
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert seen == ["started, frozen=0", "stopped"]


def test_a_service_without_a_lifespan_freezes_too() -> None:
    app = service_app("heap-test", readiness=Readiness({}), telemetry=Telemetry("heap-test"))
    with TestClient(app):
        assert gc.get_freeze_count() > 10_000
