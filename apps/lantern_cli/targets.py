"""What every command needs from a platform, whether `make run`'s processes or a Helm release.

The commands are written once against `Target`; `LocalStack` (lantern_cli.local) and `Cluster`
(lantern_cli.cluster) say where each part is and how to reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


@dataclass(frozen=True)
class ComponentState:
    """One component as `lantern status` shows it; None where the target cannot tell."""

    name: str
    desired: int
    ready: int
    healthy: bool
    restarts: int | None = None
    # The last termination reason (OOMKilled, Error) or a waiting one (CrashLoopBackOff).
    last_reason: str | None = None
    image: str | None = None
    note: str = ""


@dataclass(frozen=True)
class TokenKey:
    """The HS256 secret the gateway checks development tokens with, and the claims it requires."""

    secret: str
    issuer: str | None = None
    audience: str | None = None


class Target(Protocol):
    @property
    def description(self) -> str: ...

    def components(self) -> list[ComponentState]: ...

    def broker(self) -> AbstractContextManager[str]:
        """An AMQP URL reachable from here while the block runs."""
        ...

    def trace_query(self) -> AbstractContextManager[str]:
        """The base URL of a Jaeger HTTP query API reachable from here while the block runs."""
        ...

    def gateway(self) -> AbstractContextManager[str]:
        """The gateway's base URL, reachable from here while the block runs."""
        ...

    def token_key(self) -> TokenKey:
        """Raises Refused when the gateway does not take development tokens (JWKS)."""
        ...
