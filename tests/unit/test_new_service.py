"""`lantern new-service` refuses, before writing anything, what would not make a working service."""

from __future__ import annotations

from pathlib import Path

import pytest

from lantern_cli.__main__ import main
from lantern_cli.errors import Refused
from lantern_cli.new_service import plan

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "consumes", "port", "complaint"),
    [
        ("Shipping", ["order.confirmed"], None, "'Shipping' is not a service name"),
        ("ship-ping", ["order.confirmed"], None, "is not a service name"),
        ("notifier", ["order.confirmed"], None, "apps/notifier exists already"),
        ("json", ["order.confirmed"], None, "'json' is already an importable module"),
        ("shipping", ["order.shipped"], None, "--consumes order.shipped: not an event of order_flow.events"),
        ("shipping", ["order.confirmed"], 8003, "port 8003 is taken or reserved"),
        ("shipping", ["order.confirmed"], 4318, "port 4318 is taken or reserved"),
    ],
)
def test_it_refuses_with_a_reason(name: str, consumes: list[str], port: int | None, complaint: str) -> None:
    with pytest.raises(Refused) as refused:
        plan(REPO_ROOT, name, consumes, database=False, port=port)
    assert complaint in str(refused.value)


def test_it_plans_the_next_port_and_a_queue_named_after_the_service() -> None:
    service = plan(REPO_ROOT, "shipping", ["order.confirmed", "order.cancelled"], database=False, port=None)
    assert service.port == 8005
    assert service.queue_name == "shipping.order-events"
    assert service.queue_constant == "SHIPPING_QUEUE"
    assert plan(
        REPO_ROOT, "audit", ["order.created", "payment.declined"], database=True, port=None
    ).queue_name == ("audit.events")


def test_outside_a_checkout_it_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new-service", "shipping", "--consumes", "order.confirmed"]) == 2
    assert "is not a Lantern checkout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
