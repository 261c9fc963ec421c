"""Retention settings: read from RETENTION__*, and an inbox window that a redelivery could outlast
is refused at start, naming the value and the bound."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lantern_runtime.settings import BrokerSettings
from lantern_runtime.storage import RetentionPolicy
from lantern_runtime.storage.retention import redelivery_horizon
from orders.settings import OrdersSettings
from payments.settings import PaymentsSettings


def test_the_defaults_keep_sent_events_a_day_and_message_ids_a_week() -> None:
    policy = OrdersSettings().retention
    assert (policy.outbox_sent_seconds, policy.inbox_seconds) == (86_400, 7 * 86_400)
    assert (policy.batch_size, policy.interval_seconds) == (500, 600)


def test_the_default_horizon_is_five_attempts_of_a_handler_time_limit_and_the_longest_delay() -> None:
    assert redelivery_horizon(BrokerSettings()) == 5 * (30 + 10)


def test_retention_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION__INBOX_SECONDS", "172800")
    monkeypatch.setenv("RETENTION__BATCH_SIZE", "100")
    policy = PaymentsSettings().retention
    assert (policy.inbox_seconds, policy.batch_size) == (172_800, 100)


@pytest.mark.parametrize("settings", [OrdersSettings, PaymentsSettings])
def test_an_inbox_window_shorter_than_a_redelivery_can_take_is_refused(
    settings: type[OrdersSettings | PaymentsSettings],
) -> None:
    with pytest.raises(ValidationError, match=r"RETENTION__INBOX_SECONDS=150 .* = 200 s"):
        settings(retention=RetentionPolicy(inbox_seconds=150))
    # The bound moves with the retry settings it comes from.
    with pytest.raises(ValidationError, match=r"= 1100 s"):
        settings(retention=RetentionPolicy(inbox_seconds=1000), max_delivery_attempts=10, handler_timeout=100)
