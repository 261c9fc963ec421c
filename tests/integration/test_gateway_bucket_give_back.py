"""A token given back to a bucket (the address's, once a request's token verified) can be
taken again, and never lifts the bucket past its burst: in the live Redis and in memory."""

from __future__ import annotations

import logging
import uuid

import pytest

from gateway.ratelimit import MemoryBuckets, RedisBuckets

pytestmark = pytest.mark.redis


def redis_buckets() -> RedisBuckets:
    prefix = f"lantern-test:{uuid.uuid4().hex[:10]}:"
    # A slow rate, so refilling while the test runs cannot pass for a token given back.
    return RedisBuckets("redis://127.0.0.1:6379/0", 0.01, prefix=prefix, timeout=10.0)


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_a_token_given_back_is_taken_again_and_never_past_the_burst(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.ratelimit")
    buckets = redis_buckets() if kind == "redis" else MemoryBuckets(0.5, clock=lambda: 0.0)
    try:
        assert buckets.burst == 1
        assert (await buckets.take("ip:a")).admitted
        assert not (await buckets.take("ip:a")).admitted
        await buckets.give_back("ip:a")
        assert (await buckets.take("ip:a")).admitted
        for _ in range(5):
            await buckets.give_back("ip:a")
        first, second = await buckets.take("ip:a"), await buckets.take("ip:a")
        assert (first.admitted, second.admitted) == (True, False), "the burst is 1, whatever was given back"
    finally:
        if isinstance(buckets, RedisBuckets):
            await buckets.aclose()
    # The memory fallback follows the same rule: only its silence shows Redis kept the bucket.
    assert not [r for r in caplog.records if "falls back to memory" in r.getMessage()]


async def test_giving_back_to_a_forgotten_bucket_keeps_no_state() -> None:
    buckets = MemoryBuckets(10.0, clock=lambda: 0.0)
    for i in range(100):
        await buckets.give_back(f"ip:{i}")
    assert len(buckets) == 0
