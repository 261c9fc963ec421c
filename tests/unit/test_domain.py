from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy import Numeric, String

from orders.domain import MAX_CUSTOMER_ID, MAX_TOTAL, InvalidTransition, OrderStatus, PlaceOrder, settle
from orders.tables import orders


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
    assert order().fingerprint("c-1") == order().fingerprint("c-1")
    assert order().fingerprint("c-1") != order(
        items=[{"sku": "a", "quantity": 1, "unit_price": "1"}]
    ).fingerprint("c-1")


def test_the_fingerprint_is_the_customers_with_or_without_customer_id_in_the_body() -> None:
    assert order(customer_id=None).fingerprint("c-1") == order().fingerprint("c-1")
    assert order().fingerprint("c-1") != order().fingerprint("c-2")


def test_customer_id_may_be_left_out() -> None:
    assert order(customer_id=None).customer_id is None
    assert (
        PlaceOrder.model_validate({"items": [{"sku": "a", "quantity": 1, "unit_price": "1"}]}).customer_id
        is None
    )


def test_the_total_column_holds_exactly_up_to_the_maximum_total() -> None:
    total = orders.c.total.type
    assert isinstance(total, Numeric)
    assert total.precision is not None and total.scale is not None
    assert Decimal(10) ** (total.precision - total.scale) - Decimal(10) ** -total.scale == MAX_TOTAL
    customer_id = orders.c.customer_id.type
    assert isinstance(customer_id, String) and customer_id.length == MAX_CUSTOMER_ID


def test_an_order_whose_total_fits_the_column_is_valid() -> None:
    # 100 lines of 10,000 at 999,999.99: 999,999,990,000.00, just under the maximum.
    lines = [{"sku": f"s{i}", "quantity": 10_000, "unit_price": "999999.99"} for i in range(100)]
    assert order(items=lines).total == Decimal("999999990000.00")
    assert order(items=[{"sku": "a", "quantity": 1, "unit_price": "9999999999.99"}]).total < MAX_TOTAL


@pytest.mark.parametrize(
    "lines",
    [
        [{"sku": "a", "quantity": 10_000, "unit_price": "9999999999.99"}],
        [{"sku": f"s{i}", "quantity": 1000, "unit_price": "1000000000.00"} for i in range(2)],
    ],
    ids=["one-line", "two-lines"],
)
def test_a_total_over_what_the_column_holds_is_invalid_naming_the_maximum(lines: list[object]) -> None:
    with pytest.raises(ValidationError) as raised:
        order(items=lines)
    [error] = raised.value.errors()
    assert error["loc"] == ("items",)
    assert str(MAX_TOTAL) in error["msg"] and "999999999999.99" in error["msg"]


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
