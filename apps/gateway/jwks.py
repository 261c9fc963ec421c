"""The identity provider's signing keys, fetched from its JWKS and kept for a while.

A token naming a key id (`kid`) this gateway does not know triggers a fetch: that is how a key
rotation is picked up. Anyone can send such tokens, so fetches are rate-limited whatever the
outcome: at most one every `cooldown` seconds for unknown kids (a failed fetch counts too, so a
provider that is down is not hammered), one at a time (concurrent requests wait for the fetch in
flight), and one when the set is `lifespan` seconds old. The keys kept are only those of the
last set fetched, at most MAX_KEYS of them: a made-up kid never adds anything.

An endpoint that misbehaves (no answer in time, an HTTP error, an answer that is not JSON,
JSON that is not a key set, a set without one usable signing key) is a failed fetch: the last
good set stays in use until it is `lifespan` old, and then KeysUnavailable says which it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import jwt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# Providers publish a handful of keys (current, next, retiring); more is a mistake or an attack.
MAX_KEYS = 64


class KeysUnavailable(Exception):
    """The provider's keys could not be fetched (or were unusable), so no token can be checked."""


def _why(error: BaseException) -> str:
    """What went wrong, in words fit for a client: the kind of failure, not the provider's text."""
    if isinstance(error, jwt.PyJWKClientConnectionError | OSError):
        return "the key set endpoint failed or did not answer in time"
    if isinstance(error, jwt.PyJWKSetError):
        return "the key set has no usable keys"
    if isinstance(error, jwt.PyJWKClientError):
        return "the key set endpoint's answer is not a JSON object"
    if isinstance(error, ValueError | RecursionError):
        return "the key set endpoint's answer is not JSON"
    return "the key set is not valid"


def fetcher(url: str, *, timeout: float = 5.0) -> Callable[[], Awaitable[jwt.PyJWKSet]]:
    """Fetch the set from `url` with PyJWT, in a worker thread (it uses blocking urllib).

    `timeout` bounds the whole fetch, not only each read: an endpoint that trickles its answer
    raises TimeoutError too (the thread finishes on its own; the cooldown bounds how many)."""
    client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout)

    async def fetch() -> jwt.PyJWKSet:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(client.get_jwk_set)

    return fetch


class JwksKeys:
    def __init__(
        self,
        fetch: Callable[[], Awaitable[jwt.PyJWKSet]],
        *,
        lifespan: float = 300.0,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.lifespan = lifespan
        self.cooldown = cooldown
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self._failure = "no key set has been fetched yet"
        self.fetches = 0

    def __len__(self) -> int:
        return len(self._keys)

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, or None if the provider has no such key.

        Raises KeysUnavailable when no current set can be had from the provider."""
        now = self._clock()
        fresh = self._fetched_at is not None and now - self._fetched_at < self.lifespan
        if fresh and kid in self._keys:
            return self._keys[kid]
        may_fetch = self._attempted_at is None or now - self._attempted_at >= self.cooldown
        joining = self._in_flight is not None and not self._in_flight.done()
        if joining or may_fetch:
            await self._refresh()
            now = self._clock()
            fresh = self._fetched_at is not None and now - self._fetched_at < self.lifespan
        if not fresh:
            raise KeysUnavailable(
                f"the identity provider's keys are unavailable ({self._failure}); try again shortly"
            )
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.ensure_future(self._fetch_once())
        in_flight = self._in_flight
        try:
            # Shielded: one caller's cancellation must not cancel the fetch the others wait for.
            await asyncio.shield(in_flight)
        finally:
            if in_flight.done() and self._in_flight is in_flight:
                self._in_flight = None

    async def _fetch_once(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            found = await self._fetch()
        # ValueError: not JSON (or not UTF-8); RecursionError: JSON nested past the parser.
        except (jwt.PyJWTError, OSError, ValueError, RecursionError) as error:
            self._failure = _why(error)
            logger.warning("the JWKS could not be fetched", extra={"reason": f"{self._failure}: {error}"})
            return
        keys = [
            key
            for key in found.keys
            if key.public_key_use in ("sig", None) and isinstance(key.key_id, str) and key.key_id
        ]
        if not keys:
            self._failure = "the key set has no signing key with a key id (kid)"
            logger.warning("the JWKS has no usable keys", extra={"reason": self._failure})
            return
        if len(keys) > MAX_KEYS:
            logger.warning(
                "the JWKS has more keys than are kept",
                extra={"keys": len(keys), "kept": MAX_KEYS},
            )
        self._keys = {key.key_id: key for key in keys[:MAX_KEYS] if isinstance(key.key_id, str)}
        self._fetched_at = self._clock()
