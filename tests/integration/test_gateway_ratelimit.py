"""Token buckets in the live Redis: one atomic script, so concurrent takes never overspend."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from devstack.loopback import free_port
from gateway.ratelimit import MemoryBuckets, RedisBuckets

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def prefix() -> str:
    return f"lantern-test:{uuid.uuid4().hex[:10]}:"


async def test_concurrent_takes_from_one_redis_bucket_admit_no_more_than_the_burst() -> None:
    # A generous timeout: a take that fell back to memory would be admitted from another bucket.
    buckets = RedisBuckets(REDIS_URL, 5.0, prefix=prefix(), timeout=10.0)
    started = time.monotonic()
    decisions = await asyncio.gather(*(buckets.take("sub:alice") for _ in range(60)))
    elapsed = time.monotonic() - started
    await buckets.aclose()
    admitted = sum(d.admitted for d in decisions)
    assert 10 <= admitted <= 10 + int(elapsed * 5)
    assert all(d.retry_after >= 1 for d in decisions if not d.admitted)


async def test_one_clients_empty_bucket_does_not_touch_another_clients() -> None:
    buckets = RedisBuckets(REDIS_URL, 1.0, prefix=prefix(), timeout=10.0)
    alice = [await buckets.take("sub:alice") for _ in range(4)]
    bob = await buckets.take("sub:bob")
    await buckets.aclose()
    assert [d.admitted for d in alice] == [True, True, False, False]
    assert bob.admitted and bob.headers()["RateLimit-Remaining"] == "1"


async def test_the_bucket_refills_at_the_rate() -> None:
    # A slow rate, so a loaded machine's slow round trips cannot refill the bucket mid-drain.
    buckets = RedisBuckets(REDIS_URL, 2.0, prefix=prefix(), timeout=10.0)
    drained = [(await buckets.take("sub:alice")).admitted for _ in range(10)]
    await asyncio.sleep(1.0)  # 2 tokens back
    again = [(await buckets.take("sub:alice")).admitted for _ in range(2)]
    await buckets.aclose()
    assert drained.count(False) >= 4
    assert again == [True, True]


async def test_without_redis_each_replica_still_limits_in_memory() -> None:
    buckets = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0", 1.0, prefix=prefix())
    decisions = [await buckets.take("sub:alice") for _ in range(3)]
    await buckets.aclose()
    assert [d.admitted for d in decisions] == [True, True, False]


async def test_memory_buckets_follow_the_same_rule() -> None:
    now = [0.0]
    buckets = MemoryBuckets(2.0, clock=lambda: now[0])
    first = [(await buckets.take("ip:1")).admitted for _ in range(5)]
    now[0] += 0.5
    later = [(await buckets.take("ip:1")).admitted for _ in range(2)]
    assert first == [True, True, True, True, False]
    assert later == [True, False]
