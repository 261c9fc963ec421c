"""Fault tests: the platform as real processes on the real broker, with failures injected.

Each stack's services keep their state in PostgreSQL, a fresh database per service, as the
chart deploys them (on SQLite the outbox relay's `FOR UPDATE SKIP LOCKED` does nothing); what
they notify goes to a webhook receiver of the tests' own, which dedups nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import DEFAULT_PORTS, WITH_DATABASE, Stack
from lantern_runtime.subject import SignedSubject
from tests.conftest import fresh_database
from tests.webhook_receiver import WebhookReceiver, outcome_problems, wait_for_outcomes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

FINAL = {"confirmed", "cancelled"}
# The platform's subject key, so the helpers below can call orders directly as one customer.
SUBJECT_SECRET = "fault-tests-subject-key-0123456789abcdef"
CUSTOMER = "c-fault"

# Fast retries so faults resolve in seconds; enough attempts that a 30% failure rate does not
# exhaust them by chance.
FAST_RECOVERY = {
    "MAX_DELIVERY_ATTEMPTS": "10",
    "RETRY_BASE_DELAY_MS": "50",
    "RETRY_MAX_DELAY_MS": "400",
    "OUTBOX_POLL_SECONDS": "0.2",
    "SHUTDOWN_TIMEOUT": "10",
    "BANK_UPSTREAM__BACKOFF_BASE": "0.02",
    "BANK_UPSTREAM__BACKOFF_CAP": "0.1",
    "BANK_UPSTREAM__BREAKER_RESET_SECONDS": "0.5",
}


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """The endpoint notifier POSTs to in the platform below; it records every POST."""
    with WebhookReceiver().serving() as receiver:
        yield receiver


@pytest.fixture
def platform(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[Callable[..., Stack]]:
    """Starts the platform with extra env per service, each service with a database of its own
    in PostgreSQL (`storage="sqlite"`: the dev stack's files, as `make run`), on a fresh vhost of
    the machine's RabbitMQ (or at `amqp_url`, whose broker users the caller owns); stops it and
    drops its databases after the test."""
    cleanup = ExitStack()

    def start(
        *, amqp_url: str | None = None, storage: str = "postgres", **service_env: dict[str, str]
    ) -> Stack:
        env = {service: dict(values) for service, values in service_env.items()}
        env.setdefault("notifier", {}).setdefault("NOTIFIER_WEBHOOK_URL", webhook.url)
        if storage == "postgres":
            for service in WITH_DATABASE:
                env.setdefault(service, {})["DATABASE_URL"] = cleanup.enter_context(fresh_database())
        stack = Stack(
            tmp_path / f"platform-{uuid.uuid4().hex[:6]}",
            ports={service: free_port() for service in DEFAULT_PORTS},
            amqp_url=amqp_url or cleanup.enter_context(fresh_vhost()),
            sink_port=free_port(),
            extra_env=FAST_RECOVERY,
            service_env=env,
            subject_secret=SUBJECT_SECRET,
            broker_users=amqp_url is None,
        )
        # Stopped before its databases and vhost go (the ExitStack unwinds last in, first out).
        cleanup.callback(stack.stop)
        stack.start()
        stack.wait_ready(timeout=60)
        return stack

    with cleanup:
        yield start


def as_customer() -> SignedSubject:
    """httpx auth that calls orders directly as CUSTOMER, signed as the gateway signs."""
    return SignedSubject(SUBJECT_SECRET, CUSTOMER, service="orders")


def order_body(total: str = "10.00") -> dict[str, Any]:
    # No customer_id: the order is the caller's, whether CUSTOMER or a token's subject.
    return {"items": [{"sku": "lamp", "quantity": 1, "unit_price": total}]}


async def place_orders(
    orders_url: str,
    count: int,
    *,
    concurrency: int = 20,
    refused: Counter[str] | None = None,
    unanswered: list[str] | None = None,
    keepalive: bool = True,
    accepted: list[str] | None = None,
    auth: httpx.Auth | None = None,
) -> list[str]:
    """POST `count` orders straight to orders as CUSTOMER (or as `auth` says); returns the ids
    of those accepted (202), which also go to `accepted` as they are answered (for a caller
    watching the burst from another thread). Every other outcome is counted in `refused`, by
    status code or exception name; the Idempotency-Keys of requests that connected but got no
    answer go to `unanswered`. Without `keepalive` each request has a connection of its own, so
    none can be sent on a connection the server is closing (that race is HTTP's, not a request
    lost in flight)."""
    accepted = [] if accepted is None else accepted
    refused = Counter() if refused is None else refused
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_keepalive_connections=20 if keepalive else 0)
    async with httpx.AsyncClient(
        base_url=orders_url, timeout=10, limits=limits, auth=auth or as_customer()
    ) as client:

        async def one() -> None:
            async with limit:
                key = str(uuid.uuid4())
                try:
                    response = await client.post(
                        "/api/orders", json=order_body(), headers={"Idempotency-Key": key}
                    )
                except httpx.TransportError as error:
                    refused[type(error).__name__] += 1
                    if unanswered is not None and not isinstance(error, httpx.ConnectError):
                        unanswered.append(key)
                    return
                if response.status_code == 202:
                    accepted.append(response.json()["order_id"])
                else:
                    refused[str(response.status_code)] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return accepted


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def wait_until_final(
    orders_url: str, order_ids: list[str], timeout: float = 90.0, *, auth: httpx.Auth | None = None
) -> dict[str, str]:
    """Poll until every order (CUSTOMER's, or that of `auth`) is final; returns the last status
    seen of each."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    with httpx.Client(base_url=orders_url, timeout=5, auth=auth or as_customer()) as client:
        while True:
            for order_id in order_ids:
                if statuses.get(order_id) not in FINAL:
                    try:
                        statuses[order_id] = client.get(f"/api/orders/{order_id}").json()["status"]
                    except httpx.TransportError:
                        statuses[order_id] = "unknown"
            if all(status in FINAL for status in statuses.values()) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.25)


def authorizations_by_order(bank_url: str, order_ids: Iterable[str]) -> dict[str, list[str]]:
    """The statuses of each order's authorizations at bank (an empty list for none), asked order
    by order: bank lists one order's records only."""
    with httpx.Client(base_url=bank_url, timeout=10) as client:
        return {
            order_id: [r["status"] for r in _listed(client, "/authorizations", order_id)]
            for order_id in order_ids
        }


def notifications_by_order(notifier_url: str, order_ids: Iterable[str]) -> Counter[str]:
    """How many notifications each order has had, asked order by order."""
    with httpx.Client(base_url=notifier_url, timeout=10) as client:
        return Counter({order_id: len(_listed(client, "/notifications", order_id)) for order_id in order_ids})


def _listed(client: httpx.Client, path: str, order_id: str) -> list[dict[str, Any]]:
    response = client.get(path, params={"order_id": order_id})
    response.raise_for_status()
    records: list[dict[str, Any]] = response.json()
    return records


def bank_requests_by_order(bank_url: str, order_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Every authorize and void call bank received about each order, resends included."""
    with httpx.Client(base_url=bank_url, timeout=10) as client:
        return {order_id: _listed(client, "/authorizations/requests", order_id) for order_id in order_ids}


def bank_problems(
    statuses: dict[str, str],
    authorizations: dict[str, list[str]],
    requests: dict[str, list[dict[str, Any]]],
) -> list[str]:
    """What is wrong at the bank for orders in their final `statuses`: a confirmed order without
    exactly one live authorization, a cancelled one with a live one, or an order asked for
    under two keys or two amounts (a second payment, not a resend), counted over every call the
    bank received, which its ledger's one record per key does not show."""
    problems = []
    for order_id, status in statuses.items():
        records = authorizations.get(order_id, [])
        if status == "confirmed" and records != ["approved"]:
            problems.append(f"{order_id} (confirmed): authorizations {records}")
        if status != "confirmed" and "approved" in records:
            problems.append(f"{order_id} ({status}): a live authorization {records}")
        calls = requests.get(order_id, [])
        for kind in ("authorize", "void"):
            asked = [call for call in calls if call["kind"] == kind]
            keys = Counter(call["idempotency_key"] for call in asked)
            amounts = {call["amount"] for call in asked}
            if len(keys) > 1 or len(amounts) > 1:
                problems.append(f"{order_id} ({status}): {kind} under keys {dict(keys)}, amounts {amounts}")
        if status == "confirmed" and not any(call["kind"] == "authorize" for call in calls):
            problems.append(f"{order_id} (confirmed): bank never asked to authorize it")
    return problems


def resends(requests: dict[str, list[dict[str, Any]]]) -> Counter[int]:
    """How many orders bank was asked to authorize once, twice, …: resends are allowed (under
    the same key), and show the faults did reach the bank."""
    return Counter(sum(call["kind"] == "authorize" for call in calls) for calls in requests.values())


def assert_settled_once(
    stack: Stack, statuses: dict[str, str], webhook: WebhookReceiver | None = None
) -> None:
    """Every order final; each confirmed one authorized exactly once at bank and not voided;
    no cancelled one left with a live authorization; every call bank received about an order
    under one key; one notification each in notifier's records and, with `webhook`, one outcome
    per order at the receiver, the order's own, resent only under the same key."""
    assert {s for s in statuses.values()} <= FINAL, Counter(statuses.values())
    authorizations = authorizations_by_order(stack.url("bank"), statuses)
    requests = bank_requests_by_order(stack.url("bank"), statuses)
    problems = bank_problems(statuses, authorizations, requests)
    assert not problems, f"{len(problems)} orders wrong at bank: {problems[:10]}"
    deadline = time.monotonic() + 15
    while True:
        notified = notifications_by_order(stack.url("notifier"), statuses)
        if all(notified[o] >= 1 for o in statuses) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert {o: notified[o] for o in statuses} == dict.fromkeys(statuses, 1)
    if webhook is not None:
        problems = outcome_problems(wait_for_outcomes(webhook, statuses), statuses)
        assert not problems, f"{len(problems)} orders wrong at the webhook: {problems[:10]}"
