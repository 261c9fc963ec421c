"""The gateway's in-memory state is bounded whatever its callers do: many distinct clients
cannot grow the rate limiter's buckets, and a stream of made-up key ids cannot grow a key cache
or make the gateway hammer the identity provider."""

from __future__ import annotations

import asyncio
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.jwks import MAX_KEYS, JwksKeys, KeysUnavailable
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


class Provider:
    """A JWKS endpoint in memory: counts its fetches; `down` makes them fail as a network would."""

    def __init__(self, clock: Clock, *, kids: tuple[str, ...] = ("k-1",), delay: float = 0.0) -> None:
        self.clock = clock
        self.kids = kids
        self.down = False
        self.delay = delay
        self.fetches = 0

    async def fetch(self) -> jwt.PyJWKSet:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise jwt.PyJWKClientConnectionError("connection refused")
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
        return jwt.PyJWKSet.from_dict({"keys": [{**jwk, "kid": kid, "use": "sig"} for kid in self.kids]})


EC_KEY = ec.generate_private_key(ec.SECP256R1())


async def test_a_stream_of_made_up_kids_fetches_at_most_once_per_cooldown_and_keeps_nothing() -> None:
    clock = Clock()
    provider = Provider(clock)
    keys = JwksKeys(provider.fetch, lifespan=300.0, cooldown=5.0, clock=clock)
    assert await keys.key("k-1") is not None
    for i in range(10_000):  # one a millisecond for ten seconds
        clock.now += 0.001
        assert await keys.key(f"made-up-{i}") is None
    assert provider.fetches <= 1 + 2  # the first fetch, then one per 5 s cooldown
    assert len(keys) == 1
    assert await keys.key("k-1") is not None


async def test_while_the_provider_is_down_fetches_stay_one_per_cooldown() -> None:
    clock = Clock()
    provider = Provider(clock)
    keys = JwksKeys(provider.fetch, lifespan=300.0, cooldown=5.0, clock=clock)
    assert await keys.key("k-1") is not None
    provider.down = True
    for i in range(10_000):
        clock.now += 0.006  # sixty seconds
        assert await keys.key(f"made-up-{i}") is None
        assert await keys.key("k-1") is not None  # known keys keep working meanwhile
    assert provider.fetches <= 1 + 12
    clock.now += 300  # the set expired and the provider is still down: no key can be trusted
    with pytest.raises(KeysUnavailable):
        await keys.key("k-1")
    fetched = provider.fetches
    for _ in range(1_000):
        with pytest.raises(KeysUnavailable):
            await keys.key("k-1")
    assert provider.fetches == fetched  # within the cooldown nothing more is fetched


async def test_concurrent_unknown_kids_share_one_fetch() -> None:
    clock = Clock()
    provider = Provider(clock, delay=0.05)
    keys = JwksKeys(provider.fetch, lifespan=300.0, cooldown=5.0, clock=clock)
    found = await asyncio.gather(*(keys.key(f"made-up-{i}") for i in range(200)), keys.key("k-1"))
    assert provider.fetches == 1
    assert found[-1] is not None and found[:-1] == [None] * 200


async def test_a_rotation_is_picked_up_on_its_kid_and_a_huge_set_is_capped() -> None:
    clock = Clock()
    provider = Provider(clock)
    keys = JwksKeys(provider.fetch, lifespan=300.0, cooldown=5.0, clock=clock)
    assert await keys.key("k-1") is not None
    provider.kids = tuple(f"k-{i}" for i in range(2, 2 + MAX_KEYS * 3))
    clock.now += 5
    assert await keys.key("k-2") is not None
    assert await keys.key("k-1") is None  # retired with the set that held it
    assert len(keys) == MAX_KEYS
