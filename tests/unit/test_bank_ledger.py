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
    assert ledger.for_order("o1", limit=10) == [first]


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
    assert [r.status for r in ledger.for_order("o1", limit=10)] == ["voided"]


def test_a_void_before_the_authorization_blocks_it() -> None:
    ledger = Ledger(Decimal("10"))
    ledger.void("k", "o1")
    record, _ = ledger.authorize("k", "o1", Decimal("5"))
    assert record.status == "voided"


def test_the_ledger_keeps_its_latest_records_and_forgets_the_oldest_beyond_its_size() -> None:
    ledger = Ledger(Decimal("10"), max_records=100)
    for i in range(10_000):
        ledger.authorize(f"k{i}", f"o{i}", Decimal("5"))
    assert len(ledger) == 100
    assert ledger.for_order("o0", limit=10) == []
    kept = ledger.for_order("o9999", limit=10)
    again, created = ledger.authorize("k9999", "o9999", Decimal("5"))
    assert (again, created) == (kept[0], False)


def test_a_void_keeps_its_key_without_growing_the_ledger() -> None:
    ledger = Ledger(Decimal("10"), max_records=2)
    ledger.authorize("k1", "o1", Decimal("5"))
    ledger.authorize("k2", "o2", Decimal("5"))
    ledger.void("k2", "o2")
    assert len(ledger) == 2
    assert [r.status for o in ("o1", "o2") for r in ledger.for_order(o, limit=10)] == ["approved", "voided"]
