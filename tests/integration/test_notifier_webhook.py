"""notifier's webhook sender against a real HTTP receiver on loopback: what it POSTs, that a
resend carries the same Idempotency-Key and body, which failures the client retries at once
and which the message's redelivery retries, and that only a 2xx counts as delivered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lantern_runtime.resilience import UpstreamClient, UpstreamPolicy
from notifier.notifications import NotificationSender, WebhookFailed, metadata
from tests.integration.conftest import engine_with
from tests.webhook_receiver import Answer, WebhookReceiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

PATH = "/hooks/orders"
# Short timeouts and backoff so a stalled receiver costs a fraction of a second.
POLICY = UpstreamPolicy(timeout=0.3, max_attempts=3, max_elapsed=5, backoff_base=0.01, backoff_cap=0.05)
NOTICE = {
    "message_id": "m-1",
    "order_id": "o-1",
    "customer_id": "c-1",
    "kind": "order.confirmed",
    "text": "Your order o-1 is confirmed; 10.00 was charged.",
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver().serving() as running:
        yield running


@pytest.fixture
async def sender(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[NotificationSender]:
    """notifier's sender as its bootstrap wires it: the client on the webhook's origin, the
    POST to the webhook's path."""
    client = UpstreamClient("webhook", receiver.url.removesuffix(PATH), POLICY)
    async with engine_with(f"sqlite+aiosqlite:///{tmp_path / 'notifier.db'}", metadata) as engine:
        yield NotificationSender(engine, client, PATH)
    await client.aclose()


async def recorded(sender: NotificationSender) -> list[str]:
    return [row["delivered_to"] for row in await sender.for_order("o-1", limit=10)]


async def test_a_notification_is_one_json_post_keyed_by_its_message_id(
    sender: NotificationSender, receiver: WebhookReceiver
) -> None:
    assert await sender.send(**NOTICE) is True
    [post] = receiver.posts
    assert post.key == "m-1"
    assert post.headers["content-type"] == "application/json"
    assert post.body == {k: v for k, v in NOTICE.items() if k != "message_id"}
    assert await recorded(sender) == ["webhook"]
    # Delivered again (a redelivered message): recorded already, so not POSTed again.
    assert await sender.send(**NOTICE) is False
    assert len(receiver.posts) == 1


async def test_a_500_is_not_delivered_and_the_redelivery_resends_under_the_same_key(
    sender: NotificationSender, receiver: WebhookReceiver
) -> None:
    receiver.script(500)
    # Not retried by the client (a 500 may have done something): the message is, later.
    with pytest.raises(WebhookFailed, match="answered 500"):
        await sender.send(**NOTICE)
    assert len(receiver.posts) == 1
    assert await recorded(sender) == []
    assert await sender.send(**NOTICE) is True
    first, second = receiver.posts
    assert (first.answered, second.answered) == (500, 200)
    assert first.key == second.key == "m-1"
    assert first.body == second.body
    assert await recorded(sender) == ["webhook"]


async def test_a_503_and_a_stall_are_retried_at_once_under_the_same_key(
    sender: NotificationSender, receiver: WebhookReceiver
) -> None:
    receiver.script(503, Answer(200, delay=POLICY.timeout * 3))
    assert await sender.send(**NOTICE) is True
    posts = receiver.posts
    assert [p.answered for p in posts] == [503, 200, 200]
    assert {p.key for p in posts} == {"m-1"}
    assert await recorded(sender) == ["webhook"]


async def test_a_receiver_stalling_every_attempt_fails_the_send_and_records_nothing(
    sender: NotificationSender, receiver: WebhookReceiver
) -> None:
    receiver.script(*[Answer(200, delay=POLICY.timeout * 3)] * POLICY.max_attempts)
    with pytest.raises(WebhookFailed, match="no answer within"):
        await sender.send(**NOTICE)
    assert len(receiver.posts) == POLICY.max_attempts
    assert await recorded(sender) == []


@pytest.mark.parametrize("status", [307, 404])
async def test_only_a_2xx_counts_as_delivered(
    sender: NotificationSender, receiver: WebhookReceiver, status: int
) -> None:
    receiver.script(status)
    with pytest.raises(WebhookFailed, match=f"answered {status}"):
        await sender.send(**NOTICE)
    assert await recorded(sender) == []
