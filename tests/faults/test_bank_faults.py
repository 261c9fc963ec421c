"""1. bank fails 30% of requests with latency spikes: 200 orders all reach a final state, and
every approved order has exactly one authorization at bank."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.faults.conftest import (
    assert_settled_once,
    bank_requests_by_order,
    place_orders,
    resends,
    wait_until_final,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from devstack.stack import Stack
    from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]


def test_a_flaky_slow_bank_still_settles_every_order_exactly_once(
    platform: Callable[..., Stack], webhook: WebhookReceiver
) -> None:
    stack = platform(
        bank={
            "BANK_FAILURE_RATE": "0.3",
            "BANK_LATENCY_MS": "5",
            "BANK_SPIKE_RATE": "0.05",
            "BANK_SPIKE_MS": "1500",
        },
        payments={"BANK_UPSTREAM__TIMEOUT": "0.5"},
    )
    order_ids = asyncio.run(place_orders(stack.url("orders"), 200))
    assert len(order_ids) == 200
    statuses = wait_until_final(stack.url("orders"), order_ids)
    assert Counter(statuses.values())["confirmed"] >= 190, Counter(statuses.values())
    assert_settled_once(stack, statuses, webhook)
    # The injected failures reached the bank and were resent, each under its order's one key.
    asked = resends(bank_requests_by_order(stack.url("bank"), order_ids))
    assert max(asked) >= 2, asked
