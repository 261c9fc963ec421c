"""Token buckets in the live Redis: one atomic script, so concurrent takes never overspend.

A Redis error falls back to per-process buckets with the same numbers, so each test here also
shows Redis did the counting: no take fell back (the fallback logs a warning), the bucket's
state is in Redis under the prefix, and two limiters on one prefix share one budget, which
buckets of their own would not."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as redis

from devstack.loopback import free_port
from gateway.ratelimit import MemoryBuckets, RedisBuckets

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
FALLBACK = "rate limiting falls back to memory"


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.get_records("call")
    return [r.getMessage() for r in records if r.getMessage().startswith(FALLBACK)]


@pytest.fixture
def counted_by_redis(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if any take was answered by the memory fallback instead of Redis."""
    caplog.set_level(logging.WARNING, logger="gateway.ratelimit")
    yield
    assert not fallbacks(caplog), "Redis did not count every take"


async def in_redis(key: str) -> dict[str, str]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        state: dict[str, str] = await client.hgetall(key)
    finally:
        await client.aclose()
    return state


def prefix() -> str:
    return f"lantern-test:{uuid.uuid4().hex[:10]}:"


async def test_concurrent_takes_from_one_redis_bucket_admit_no_more_than_the_burst(
    counted_by_redis: None,
) -> None:
    # A generous timeout: a take that fell back to memory would be admitted from another bucket.
    shared = prefix()
    buckets = RedisBuckets(REDIS_URL, 5.0, prefix=shared, timeout=10.0)
    started = time.monotonic()
    decisions = await asyncio.gather(*(buckets.take("sub:alice") for _ in range(60)))
    elapsed = time.monotonic() - started
    await buckets.aclose()
    admitted = sum(d.admitted for d in decisions)
    assert 10 <= admitted <= 10 + int(elapsed * 5)
    assert all(d.retry_after >= 1 for d in decisions if not d.admitted)
    assert float((await in_redis(shared + "sub:alice"))["tokens"]) < 1


async def test_two_limiters_on_one_prefix_share_one_budget(counted_by_redis: None) -> None:
    """Two gateway replicas: buckets of their own would admit a burst each."""
    shared = prefix()
    # A slow rate: the refill while the takes run stays far below a second burst.
    replicas = [RedisBuckets(REDIS_URL, 2.0, prefix=shared, timeout=10.0) for _ in range(2)]
    started = time.monotonic()
    decisions = await asyncio.gather(*(replicas[n % 2].take("sub:alice") for n in range(40)))
    elapsed = time.monotonic() - started
    for replica in replicas:
        await replica.aclose()
    admitted = sum(d.admitted for d in decisions)
    assert 4 <= admitted <= 4 + int(elapsed * 2), (admitted, elapsed)


async def test_one_clients_empty_bucket_does_not_touch_another_clients(counted_by_redis: None) -> None:
    buckets = RedisBuckets(REDIS_URL, 1.0, prefix=prefix(), timeout=10.0)
    alice = [await buckets.take("sub:alice") for _ in range(4)]
    bob = await buckets.take("sub:bob")
    await buckets.aclose()
    assert [d.admitted for d in alice] == [True, True, False, False]
    assert bob.admitted and bob.headers()["RateLimit-Remaining"] == "1"


async def test_the_bucket_refills_at_the_rate(counted_by_redis: None) -> None:
    # A slow rate, so a loaded machine's slow round trips cannot refill the bucket mid-drain.
    buckets = RedisBuckets(REDIS_URL, 2.0, prefix=prefix(), timeout=10.0)
    drained = [(await buckets.take("sub:alice")).admitted for _ in range(10)]
    await asyncio.sleep(1.0)  # 2 tokens back
    again = [(await buckets.take("sub:alice")).admitted for _ in range(2)]
    await buckets.aclose()
    assert drained.count(False) >= 4
    assert again == [True, True]


async def test_without_redis_each_replica_still_limits_in_memory_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.ratelimit")
    broken = f"redis://127.0.0.1:{free_port()}/0"
    replicas = [RedisBuckets(broken, 1.0, prefix=prefix()) for _ in range(2)]
    decisions = [[await replica.take("sub:alice") for _ in range(3)] for replica in replicas]
    for replica in replicas:
        await replica.aclose()
    # Each replica its own bucket: the budget is no longer shared, and the log says why.
    assert [[d.admitted for d in mine] for mine in decisions] == [[True, True, False]] * 2
    assert len(fallbacks(caplog)) == 6


async def test_memory_buckets_follow_the_same_rule() -> None:
    now = [0.0]
    buckets = MemoryBuckets(2.0, clock=lambda: now[0])
    first = [(await buckets.take("ip:1")).admitted for _ in range(5)]
    now[0] += 0.5
    later = [(await buckets.take("ip:1")).admitted for _ in range(2)]
    assert first == [True, True, True, True, False]
    assert later == [True, False]
