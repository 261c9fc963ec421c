"""The authenticated subject travels to the services in X-Lantern-Subject, signed by the gateway.

X-Lantern-Subject holds the token's subject, percent-encoded (so it is ASCII). The signature
header is `t=<unix seconds>,v2=<hex HMAC-SHA256>` under GATEWAY_SUBJECT_SECRET, over

    v2 \\n <t> \\n <METHOD> \\n <target service> \\n <raw path, no query> \\n <X-Lantern-Subject>

so a captured pair works only for the same method and path on the same service, and only for
`max_age` seconds (10 by default). The target service is the gateway route's `service` (e.g.
`orders`); a service checks against its own name. The first format (`v1=`, over time and
subject only) is refused.

Only the gateway (which signs) and the services that rely on the subject (orders) hold the key:
whoever holds it can speak for any subject to any service that trusts it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import httpx
from opentelemetry import trace

# At run time: FastAPI reads required_subject's annotation.
from starlette.requests import Request

from lantern_runtime.problems import Problem, problem_response

if TYPE_CHECKING:
    from collections.abc import Generator

    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_AGE",
    "SIGNATURE_HEADER",
    "SUBJECT_HEADER",
    "SignedSubject",
    "SubjectRefused",
    "TrustedSubject",
    "encode_subject",
    "required_subject",
    "sign_subject",
    "subject_of",
    "verify_subject",
]

SUBJECT_HEADER = "X-Lantern-Subject"
SIGNATURE_HEADER = "X-Lantern-Subject-Signature"
DEFAULT_MAX_AGE = 10.0
VERSION = "v2"
# Left as they are by the percent-encoding; everything else becomes %XX.
SUBJECT_SAFE = "@:|/+=._-~"
_ENCODED_SUBJECT = re.compile(r"(?:[A-Za-z0-9@:|/+=._~-]|%[0-9A-Fa-f]{2})+")
_SIGNATURE = re.compile(r"t=([0-9]{1,12}),v2=([0-9a-f]{64})")
# Where TrustedSubject leaves the verified, decoded subject for the handlers (request.state).
_STATE_KEY = "lantern_subject"


class SubjectRefused(Exception):
    """The subject headers are missing, malformed, forged or stale; the message says which."""


def encode_subject(subject: str) -> str:
    """The subject as X-Lantern-Subject carries it: ASCII subjects (the usual) unchanged."""
    return quote(subject, safe=SUBJECT_SAFE)


def _mac(secret: str, timestamp: int, method: str, service: str, path: bytes, subject: str) -> str:
    message = b"\n".join(
        (VERSION.encode(), str(timestamp).encode(), method.encode(), service.encode(), path, subject.encode())
    )
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_subject(
    secret: str,
    subject: str,
    *,
    method: str,
    path: bytes,
    service: str,
    now: float | None = None,
) -> str:
    """The signature header for `subject` (as encoded in X-Lantern-Subject) on one request:
    `method` and the raw `path` (no query) as sent to `service`."""
    if not _ENCODED_SUBJECT.fullmatch(subject):
        raise ValueError("sign the percent-encoded subject (encode_subject), not the raw one")
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},{VERSION}={_mac(secret, timestamp, method.upper(), service, path, subject)}"


def verify_subject(
    secret: str,
    subject: str,
    signature: str,
    *,
    method: str,
    path: bytes,
    service: str,
    max_age: float = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> str:
    """The decoded subject when `signature` is the gateway's for this request; SubjectRefused
    saying why otherwise. Never raises anything else, whatever the headers hold."""
    if not _ENCODED_SUBJECT.fullmatch(subject):
        raise SubjectRefused(f"{SUBJECT_HEADER} is not a percent-encoded ASCII subject")
    try:
        decoded = unquote(subject, errors="strict")
    except UnicodeDecodeError as error:
        raise SubjectRefused(f"{SUBJECT_HEADER} does not percent-decode to UTF-8") from error
    fields = _SIGNATURE.fullmatch(signature)
    if fields is None:
        raise SubjectRefused(
            f"{SIGNATURE_HEADER} is not of the form t=<unix seconds>,{VERSION}=<64 hex digits>"
        )
    timestamp, mac = int(fields[1]), fields[2]
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age:
        raise SubjectRefused(f"{SIGNATURE_HEADER} is older than {max_age:g}s (or from the future)")
    expected = _mac(secret, timestamp, method.upper(), service, path, subject)
    if not hmac.compare_digest(mac, expected):
        raise SubjectRefused(
            f"{SIGNATURE_HEADER} does not match this subject, method, path and service ({service})"
        )
    return decoded


class SignedSubject(httpx.Auth):
    """httpx auth that signs `subject` into each request it sends to `service`, with that
    request's method and path and a fresh timestamp, so retries are signed anew. The gateway
    forwards with it; so do callers that reach a service directly (tests, tools)."""

    def __init__(self, secret: str, subject: str, *, service: str) -> None:
        self.secret = secret
        self.subject = encode_subject(subject)
        self.service = service

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path = request.url.raw_path.split(b"?", 1)[0]
        request.headers[SUBJECT_HEADER] = self.subject
        request.headers[SIGNATURE_HEADER] = sign_subject(
            self.secret, self.subject, method=request.method, path=path, service=self.service
        )
        yield request


class TrustedSubject:
    """ASGI middleware for the services. With a secret: a request without subject headers goes
    on without a subject; one whose headers are the gateway's for this request, method and
    service goes on with the decoded subject (`subject_of`) and `enduser.id` on the server span;
    any other (unsigned, forged, stale, malformed, or either header twice) is answered 401
    here. Without a secret the service trusts no subject: both headers are removed."""

    def __init__(
        self, app: ASGIApp, secret: str | None, service: str, max_age: float = DEFAULT_MAX_AGE
    ) -> None:
        self.app = app
        self.secret = secret
        self.service = service
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
        except SubjectRefused as refused:
            response = problem_response(
                401, str(refused), instance=scope["path"], title="Subject not trusted"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        # Changes the scope in place: the server span's middleware outside reads what routing
        # writes into this same scope (the route), which a copy would hide from it.
        names = (SUBJECT_HEADER.lower().encode(), SIGNATURE_HEADER.lower().encode())
        found: dict[bytes, list[bytes]] = {name: [] for name in names}
        for name, value in scope["headers"]:
            if name.lower() in found:
                found[name.lower()].append(value)
        if not any(found.values()):
            return
        if not self.secret:
            headers = [(name, value) for name, value in scope["headers"] if name.lower() not in names]
            scope["headers"] = headers
            return
        for header, name in zip((SUBJECT_HEADER, SIGNATURE_HEADER), names, strict=True):
            # Two copies could be read differently by two readers (the first by one, the last
            # by another): refused rather than picking one.
            if len(found[name]) > 1:
                raise SubjectRefused(f"{header} was sent {len(found[name])} times; send it once")
            if not found[name]:
                other = SIGNATURE_HEADER if header == SUBJECT_HEADER else SUBJECT_HEADER
                raise SubjectRefused(f"{other} came without {header}")
        subject = verify_subject(
            self.secret,
            found[names[0]][0].decode("latin-1"),
            found[names[1]][0].decode("latin-1"),
            method=scope["method"],
            path=scope.get("raw_path") or scope["path"].encode(),
            service=self.service,
            max_age=self.max_age,
        )
        trace.get_current_span().set_attribute("enduser.id", subject)
        # Per request: servers give each request a copy of the lifespan state.
        scope.setdefault("state", {})[_STATE_KEY] = subject


def subject_of(request: Request) -> str | None:
    """The subject the gateway signed for this request, decoded; None when none came."""
    subject = request.scope.get("state", {}).get(_STATE_KEY)
    return subject if isinstance(subject, str) else None


def required_subject(request: Request) -> str:
    """A FastAPI dependency for routes that act for a caller: its subject, or 401."""
    subject = subject_of(request)
    if subject is None:
        raise Problem(
            401,
            f"no authenticated subject: call through the gateway, which signs {SUBJECT_HEADER}",
            title="Subject required",
        )
    return subject
