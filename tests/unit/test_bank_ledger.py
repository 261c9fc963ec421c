from decimal import Decimal

import pytest

from bank.ledger import KeyReused, Ledger


def test_amounts_up_to_the_limit_are_approved_and_larger_ones_declined() -> None:
    ledger = Ledger(Decimal("1000.00"))
    approved, _ = ledger.authorize("k1", "o1", Decimal("1000.00"))
    declined, _ = ledger.authorize("k2", "o2", Decimal("1000.01"))
    assert approved.status == "approved"
    assert declined.status == "declined"
    assert declined.reason and "1000.01" in declined.reason


def test_the_same_key_returns_the_same_authorization_once() -> None:
    ledger = Ledger(Decimal("10"))
    first, created = ledger.authorize("k", "o1", Decimal("5"))
    again, created_again = ledger.authorize("k", "o1", Decimal("5"))
    assert (created, created_again) == (True, False)
    assert again == first
    assert ledger.for_order("o1") == [first]


def test_a_reused_key_for_another_amount_is_refused() -> None:
    ledger = Ledger(Decimal("10"))
    ledger.authorize("k", "o1", Decimal("5"))
    with pytest.raises(KeyReused, match="'k'"):
        ledger.authorize("k", "o1", Decimal("6"))


def test_a_void_releases_the_authorization_and_a_late_authorize_is_not_granted() -> None:
    ledger = Ledger(Decimal("10"))
    ledger.authorize("k", "o1", Decimal("5"))
    assert ledger.void("k", "o1").status == "voided"
    late, created = ledger.authorize("k", "o1", Decimal("5"))
    assert (late.status, created) == ("voided", False)
    assert [r.status for r in ledger.for_order("o1")] == ["voided"]


def test_a_void_before_the_authorization_blocks_it() -> None:
    ledger = Ledger(Decimal("10"))
    ledger.void("k", "o1")
    record, _ = ledger.authorize("k", "o1", Decimal("5"))
    assert record.status == "voided"
