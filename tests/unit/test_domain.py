from decimal import Decimal

import pytest
from pydantic import ValidationError

from orders.domain import InvalidTransition, OrderStatus, PlaceOrder, settle


def order(**overrides: object) -> PlaceOrder:
    body = {
        "customer_id": "c-1",
        "items": [
            {"sku": "lamp", "quantity": 2, "unit_price": "19.90"},
            {"sku": "bulb", "quantity": 3, "unit_price": "0.10"},
        ],
    }
    body.update(overrides)
    return PlaceOrder.model_validate(body)


def test_total_is_the_exact_decimal_sum_of_the_lines() -> None:
    assert order().total == Decimal("40.10")


def test_same_content_has_the_same_fingerprint_and_different_content_does_not() -> None:
    assert order().fingerprint() == order().fingerprint()
    assert order().fingerprint() != order(customer_id="c-2").fingerprint()


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"sku": "a", "quantity": 0, "unit_price": "1"}], "quantity"),
        ([{"sku": "a", "quantity": 1, "unit_price": "0"}], "unit_price"),
        ([{"sku": "a", "quantity": 1, "unit_price": "-1"}], "unit_price"),
        ([{"quantity": 1, "unit_price": "1"}], "sku"),
        ([], "items"),
    ],
)
def test_invalid_lines_are_rejected_naming_the_field(items: list[object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        order(items=items)
    assert any(field in map(str, error["loc"]) for error in raised.value.errors())


def test_a_pending_order_settles_to_confirmed_or_cancelled() -> None:
    assert settle(OrderStatus.PENDING, paid=True) is OrderStatus.CONFIRMED
    assert settle(OrderStatus.PENDING, paid=False) is OrderStatus.CANCELLED


@pytest.mark.parametrize("final", [OrderStatus.CONFIRMED, OrderStatus.CANCELLED])
def test_a_final_order_cannot_settle_again(final: OrderStatus) -> None:
    with pytest.raises(InvalidTransition, match=final.value):
        settle(final, paid=True)
