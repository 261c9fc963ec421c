"""5. With orders down, the gateway answers 503 quickly and its breaker opens; the breaker
closes again after orders returns."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]


def test_the_gateway_fails_fast_while_orders_is_down_and_recovers_by_itself(
    platform: Callable[..., Stack],
) -> None:
    # On the dev stack's SQLite files, as `make run`: nothing here depends on the storage.
    stack = platform(storage="sqlite")
    with httpx.Client(base_url=stack.url("gateway"), headers=stack.auth_headers(), timeout=30) as gateway:
        assert gateway.get("/api/orders/none").status_code == 404  # orders answers
        stack.stop_service("orders")

        answers = [gateway.get("/api/orders/none") for _ in range(5)]
        assert [a.status_code for a in answers] == [503] * 5
        assert all(a.headers["content-type"].startswith("application/problem+json") for a in answers)
        assert all(int(a.headers["retry-after"]) >= 1 for a in answers)
        # Retries hit the dead upstream until the breaker opened; then it answers without trying.
        assert "circuit breaker is open" in answers[-1].json()["detail"]

        stack.start_service("orders")
        stack.wait_ready()
        deadline = time.monotonic() + 30
        while (status := gateway.get("/api/orders/none").status_code) != 404 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == 404  # the half-open trial went through and closed the breaker
        assert gateway.get("/api/orders/none").status_code == 404


def test_the_gateway_answers_504_when_orders_hangs(platform: Callable[..., Stack]) -> None:
    stack = platform(
        storage="sqlite", gateway={"ORDERS_UPSTREAM__TIMEOUT": "0.5", "ORDERS_UPSTREAM__MAX_ELAPSED": "1.5"}
    )
    with httpx.Client(base_url=stack.url("gateway"), headers=stack.auth_headers(), timeout=60) as gateway:
        stack.processes["orders"].send_signal(signal.SIGSTOP)  # alive but silent: requests hang
        try:
            answer = gateway.get("/api/orders/none")
        finally:
            stack.processes["orders"].send_signal(signal.SIGCONT)
        assert answer.status_code == 504
        assert int(answer.headers["retry-after"]) >= 1
