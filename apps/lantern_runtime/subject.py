"""The authenticated subject travels to the services in X-Lantern-Subject, signed by the gateway.

The signature header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>\\n<subject>">` under the
secret the gateway and the services share (GATEWAY_SUBJECT_SECRET). A service trusts the
subject only when `subject_is_genuine` says so: a client cannot forge it without the secret,
and a captured header stops working after `max_age` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote

from opentelemetry import trace

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

SUBJECT_HEADER = "X-Lantern-Subject"
SIGNATURE_HEADER = "X-Lantern-Subject-Signature"


def _mac(secret: str, timestamp: int, subject: str) -> str:
    return hmac.new(secret.encode(), f"{timestamp}\n{subject}".encode(), hashlib.sha256).hexdigest()


def sign_subject(secret: str, subject: str, *, now: float | None = None) -> str:
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={_mac(secret, timestamp, subject)}"


def subject_is_genuine(
    secret: str, subject: str, signature: str, *, max_age: float = 60.0, now: float | None = None
) -> bool:
    try:
        fields = dict(part.split("=", 1) for part in signature.split(","))
        timestamp = int(fields["t"])
        mac = fields["v1"]
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age:
        return False
    return hmac.compare_digest(mac, _mac(secret, timestamp, subject))


class TrustedSubject:
    """ASGI middleware for the services: keeps X-Lantern-Subject only when the gateway signed
    it, and records it as `enduser.id` on the server span. Without a secret, it keeps none."""

    def __init__(self, app: ASGIApp, secret: str | None) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self._checked(scope)
        await self.app(scope, receive, send)

    def _checked(self, scope: Scope) -> Scope:
        names = (SUBJECT_HEADER.lower().encode(), SIGNATURE_HEADER.lower().encode())
        found = {name: value for name, value in scope["headers"] if name in names}
        if not found:
            return scope
        subject = found.get(names[0], b"").decode("latin-1")
        signature = found.get(names[1], b"").decode("latin-1")
        if self.secret and subject and subject_is_genuine(self.secret, subject, signature):
            trace.get_current_span().set_attribute("enduser.id", unquote(subject))
            return scope
        # Unsigned or forged: the handlers must not see it at all.
        headers = [(name, value) for name, value in scope["headers"] if name not in names]
        return {**scope, "headers": headers}
