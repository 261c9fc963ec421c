"""Authorizations the bank has granted or declined, each recorded once per idempotency key."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import Any


class KeyReused(Exception):
    """The idempotency key was used before for a different order or amount."""


@dataclass(frozen=True)
class AuthorizationRecord:
    authorization_id: str
    idempotency_key: str
    order_id: str
    amount: Decimal
    status: str
    reason: str | None
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "amount": str(self.amount),
            "created_at": self.created_at.isoformat(),
        }


class Ledger:
    """In memory: the simulator's state lives as long as its process, like a sandbox account.

    It holds the `max_records` latest authorizations and forgets the oldest beyond them, as a
    provider expires its idempotency keys: a key must outlive every retry that may repeat it
    (payments' retries end within minutes), not the process."""

    def __init__(self, approval_limit: Decimal, max_records: int = 100_000) -> None:
        if max_records < 1:
            raise ValueError(f"the ledger must hold at least one record, not {max_records}")
        self._approval_limit = approval_limit
        self._max_records = max_records
        # Insertion order is age: a void rewrites its key's record in place.
        self._by_key: dict[str, AuthorizationRecord] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def _keep(self, record: AuthorizationRecord) -> None:
        self._by_key[record.idempotency_key] = record
        while len(self._by_key) > self._max_records:
            del self._by_key[next(iter(self._by_key))]

    def authorize(self, key: str, order_id: str, amount: Decimal) -> tuple[AuthorizationRecord, bool]:
        """Returns (record, created); the same key and request always give the same record."""
        existing = self._by_key.get(key)
        if existing is not None:
            if existing.status == "voided" and existing.order_id == order_id:
                return existing, False
            if (existing.order_id, existing.amount) != (order_id, amount):
                raise KeyReused(
                    f"Idempotency-Key {key!r} was used for order {existing.order_id} "
                    f"amount {existing.amount}; use a new key for a new authorization"
                )
            return existing, False
        approved = amount <= self._approval_limit
        record = AuthorizationRecord(
            authorization_id=str(uuid.uuid4()),
            idempotency_key=key,
            order_id=order_id,
            amount=amount,
            status="approved" if approved else "declined",
            reason=None if approved else f"amount {amount} exceeds the limit {self._approval_limit}",
            created_at=datetime.now(UTC),
        )
        self._keep(record)
        return record, True

    def void(self, key: str, order_id: str) -> AuthorizationRecord:
        """Release the authorization made with `key`. Voiding first leaves a voided record,
        so an authorization that arrives late under the same key is never granted."""
        existing = self._by_key.get(key)
        if existing is not None and existing.order_id != order_id:
            raise KeyReused(f"Idempotency-Key {key!r} belongs to order {existing.order_id}, not {order_id}")
        record = AuthorizationRecord(
            authorization_id=existing.authorization_id if existing else str(uuid.uuid4()),
            idempotency_key=key,
            order_id=order_id,
            amount=existing.amount if existing else Decimal("0"),
            status="voided",
            reason="voided by the merchant",
            created_at=existing.created_at if existing else datetime.now(UTC),
        )
        self._keep(record)
        return record

    def for_order(self, order_id: str, *, limit: int) -> list[AuthorizationRecord]:
        """The first `limit` records of `order_id`, oldest first."""
        return list(islice((r for r in self._by_key.values() if r.order_id == order_id), limit))


@dataclass(frozen=True)
class ReceivedRequest:
    """One authorize or void call as it arrived, before any fault or idempotency applied."""

    kind: str
    idempotency_key: str
    order_id: str
    amount: Decimal | None
    received_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "amount": None if self.amount is None else str(self.amount),
            "received_at": self.received_at.isoformat(),
        }


class RequestLog:
    """Every call the simulator received, the latest `max_requests` of them: what the ledger's
    one-record-per-key hides (a resend, or the same payment asked for twice under one key)
    stays countable here, as a provider's dashboard shows each API request."""

    def __init__(self, max_requests: int = 100_000) -> None:
        self._requests: deque[ReceivedRequest] = deque(maxlen=max_requests)

    def record(self, kind: str, key: str, order_id: str, amount: Decimal | None = None) -> None:
        self._requests.append(ReceivedRequest(kind, key, order_id, amount, datetime.now(UTC)))

    def for_order(self, order_id: str, *, limit: int) -> list[ReceivedRequest]:
        """The first `limit` requests about `order_id`, oldest first."""
        return list(islice((r for r in self._requests if r.order_id == order_id), limit))
