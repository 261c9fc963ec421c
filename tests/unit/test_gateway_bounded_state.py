"""The gateway's in-memory state is bounded whatever its callers do: many distinct clients
cannot grow the rate limiter's buckets, and a stream of made-up key ids cannot grow a key cache
or make the gateway hammer the identity provider."""

from __future__ import annotations

import pytest

from gateway.ratelimit import MemoryBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_buckets_for_many_distinct_clients_stay_within_the_cap() -> None:
    clock = Clock()
    buckets = MemoryBuckets(10.0, max_clients=1_000, clock=clock)
    for i in range(20_000):  # all within a second: no bucket has refilled, none may be forgotten
        clock.now += 0.00005
        await buckets.take(f"ip:10.0.{i // 256}.{i % 256}")
        assert len(buckets) <= 1_000


async def test_a_busy_client_keeps_its_empty_bucket_while_others_come_and_go() -> None:
    clock = Clock()
    buckets = MemoryBuckets(10.0, max_clients=100, clock=clock)
    for _ in range(20):
        await buckets.take("sub:hot")  # the burst is 20: now empty
    for i in range(5_000):
        await buckets.take(f"ip:{i}")
        if i % 50 == 0:
            assert not (await buckets.take("sub:hot")).admitted, f"forgotten after {i} others"


async def test_refilled_buckets_are_forgotten_as_time_passes() -> None:
    clock = Clock()
    buckets = MemoryBuckets(10.0, max_clients=100_000, clock=clock)
    for i in range(1_000):
        await buckets.take(f"ip:{i}")
    clock.now += 60  # every one of them is full again, the same as no bucket
    await buckets.take("ip:late")
    assert len(buckets) == 1


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        MemoryBuckets(10.0, max_clients=0)
