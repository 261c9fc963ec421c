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
