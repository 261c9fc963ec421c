"""Per-client token buckets: `rate` requests a second, bursts up to twice that.

With Redis the bucket lives there and one Lua script reads, refills and takes from it
atomically, on Redis's clock, so every gateway replica shares it. Without Redis, or while Redis
does not answer, each replica keeps its own buckets in memory.

Answers carry the RateLimit fields of draft-ietf-httpapi-ratelimit-headers-06:
RateLimit-Limit (the burst), RateLimit-Remaining, RateLimit-Reset (seconds until the bucket is
full again) and RateLimit-Policy (`<burst>;w=<seconds to refill it>`); a 429 adds Retry-After.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

# KEYS[1] the bucket; ARGV rate (tokens/s), burst and cost: 1 takes a token, -1 gives one
# back (never past the burst). Returns {admitted 0|1, tokens left}.
BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3] or '1')
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local admitted = 0
if tokens >= cost then
  tokens = math.min(burst, tokens - cost)
  admitted = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {admitted, tostring(tokens)}
"""


@dataclass(frozen=True)
class RateDecision:
    admitted: bool
    burst: int
    rate: float
    tokens: float

    @property
    def retry_after(self) -> int:
        return 0 if self.admitted else max(1, math.ceil((1 - self.tokens) / self.rate))

    def headers(self) -> dict[str, str]:
        fields = {
            "RateLimit-Limit": str(self.burst),
            "RateLimit-Remaining": str(max(0, math.floor(self.tokens))),
            "RateLimit-Reset": str(math.ceil((self.burst - self.tokens) / self.rate)),
            "RateLimit-Policy": f"{self.burst};w={math.ceil(self.burst / self.rate)}",
        }
        if not self.admitted:
            fields["Retry-After"] = str(self.retry_after)
        return fields


class MemoryBuckets:
    """Buckets in this process, in order of last use, never more than `max_clients` of them.

    A bucket that has refilled is the same as no bucket, so the least recently used ones are
    forgotten as soon as they are full again. Past the cap (many distinct clients within one
    refill time, as in a flood from many addresses) the least recently used bucket is forgotten
    even if not full: that client starts again with a full burst, while a busy client, being
    recently used, keeps its empty bucket. Each take does O(1) work on average.
    """

    def __init__(
        self, rate: float, *, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        self.rate = rate
        self.burst = max(1, math.floor(2 * rate))
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, client: str) -> RateDecision:
        now = self._clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        admitted = tokens >= 1
        if admitted:
            tokens -= 1
        self._keep(client, tokens, now)
        return RateDecision(admitted, self.burst, self.rate, tokens)

    async def give_back(self, client: str) -> None:
        """Return a token taken from `client`'s bucket (never past the burst)."""
        if client not in self._buckets:
            return  # forgotten, so full already
        now = self._clock()
        tokens, at = self._buckets.pop(client)
        self._keep(client, min(self.burst, tokens + (now - at) * self.rate + 1), now)

    def _keep(self, client: str, tokens: float, now: float) -> None:
        self._forget_full(now)
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)
        self._buckets[client] = (tokens, now)

    def _forget_full(self, now: float) -> None:
        while self._buckets:
            tokens, at = next(iter(self._buckets.values()))
            if tokens + (now - at) * self.rate < self.burst:
                return
            self._buckets.popitem(last=False)


class RedisBuckets:
    def __init__(self, url: str, rate: float, *, prefix: str, timeout: float = 0.5) -> None:
        self.rate = rate
        self.burst = max(1, math.floor(2 * rate))
        self.prefix = prefix
        # Short: a slow Redis must not slow every request; past it, the memory buckets answer.
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(BUCKET_SCRIPT)
        self._fallback = MemoryBuckets(rate)

    async def take(self, client: str) -> RateDecision:
        try:
            admitted, tokens = await self._script(
                keys=[self.prefix + client], args=[self.rate, self.burst, 1]
            )
        except (RedisError, OSError) as error:
            logger.warning("rate limiting falls back to memory: Redis failed", extra={"reason": str(error)})
            return await self._fallback.take(client)
        return RateDecision(bool(admitted), self.burst, self.rate, float(tokens))

    async def give_back(self, client: str) -> None:
        """Return a token taken from `client`'s bucket (never past the burst)."""
        try:
            await self._script(keys=[self.prefix + client], args=[self.rate, self.burst, -1])
        except (RedisError, OSError) as error:
            logger.warning("rate limiting falls back to memory: Redis failed", extra={"reason": str(error)})
            await self._fallback.give_back(client)

    async def aclose(self) -> None:
        await self._redis.aclose()


def client_key(subject: str | None, address: str | None) -> str:
    """One bucket per authenticated subject; unauthenticated callers share one per address."""
    return f"sub:{subject}" if subject else f"ip:{address or 'unknown'}"
