"""Services trust X-Lantern-Subject only when the gateway signed it for this request: the
signature covers method, path, target service and subject, and expires in seconds; anything
else is a 401 problem, never a 500, and never a silently chosen copy."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.subject import (
    SIGNATURE_HEADER,
    SUBJECT_HEADER,
    SignedSubject,
    SubjectRefused,
    encode_subject,
    required_subject,
    sign_subject,
    subject_of,
    verify_subject,
)
from lantern_runtime.telemetry import Telemetry

SECRET = "s" * 40
NOW = 1_800_000_000.0
REQUEST = {"method": "POST", "path": b"/api/orders", "service": "orders"}


def signed(subject: str = "alice", **overrides: Any) -> str:
    return sign_subject(SECRET, subject, **{**REQUEST, "now": NOW, **overrides})


def verify(subject: str, signature: str, **overrides: Any) -> str:
    return verify_subject(SECRET, subject, signature, **{**REQUEST, "now": NOW, **overrides})


def test_a_signature_verifies_for_the_request_it_was_made_for() -> None:
    assert verify("alice", signed()) == "alice"
    assert signed().startswith(f"t={int(NOW)},v2=")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"method": "GET"}, "does not match"),
        ({"path": b"/api/orders/o-1"}, "does not match"),
        ({"service": "payments"}, r"does not match .*\(payments\)"),
        ({"now": NOW + 11}, "older than 10s"),
        ({"now": NOW - 11}, "from the future"),
        ({"max_age": 1.0, "now": NOW + 2}, "older than 1s"),
    ],
    ids=["method", "path", "service", "expired", "future", "max-age"],
)
def test_a_signature_fails_for_another_method_path_service_or_time(
    change: dict[str, Any], match: str
) -> None:
    with pytest.raises(SubjectRefused, match=match):
        verify("alice", signed(), **change)


def test_a_signature_fails_for_another_subject_or_secret() -> None:
    with pytest.raises(SubjectRefused, match="does not match"):
        verify("root", signed("alice"))
    other = sign_subject("x" * 40, "alice", **REQUEST, now=NOW)
    with pytest.raises(SubjectRefused, match="does not match"):
        verify("alice", other)


def test_the_first_format_over_time_and_subject_only_is_refused() -> None:
    with pytest.raises(SubjectRefused, match="not of the form"):
        verify("alice", f"t={int(NOW)},v1={'0' * 64}")


@pytest.mark.parametrize(
    ("subject", "signature", "match"),
    [
        ("josé", None, "not a percent-encoded ASCII"),
        ("a b", None, "not a percent-encoded ASCII"),
        ("bad%zz", None, "not a percent-encoded ASCII"),
        ("%ff%fe", None, "does not percent-decode to UTF-8"),
        ("", None, "not a percent-encoded ASCII"),
        ("alice", "garbage", "not of the form"),
        ("alice", f"t={int(NOW)},v2={'é' * 64}", "not of the form"),
        ("alice", f"t={int(NOW)},v2={'g' * 64}", "not of the form"),
        ("alice", f"t={int(NOW)},v2={'0' * 63}", "not of the form"),
        ("alice", f"t=-1,v2={'0' * 64}", "not of the form"),
        ("alice", f"t={'9' * 40},v2={'0' * 64}", "not of the form"),
        ("alice", "t=1,v2=" + "0" * 64 + ",t=2", "not of the form"),
    ],
)
def test_malformed_values_are_refusals_not_exceptions(
    subject: str, signature: str | None, match: str
) -> None:
    with pytest.raises(SubjectRefused, match=match):
        verify(subject, signature or signed())


def test_a_non_ascii_subject_travels_percent_encoded_and_comes_back_decoded() -> None:
    encoded = encode_subject("josé|42")
    assert encoded == "jos%C3%A9|42"
    assert verify(encoded, signed(encoded)) == "josé|42"
    with pytest.raises(ValueError, match="percent-encoded"):
        signed("josé")


# Through the middleware of a real service app


def app_seeing_subject(secret: str | None = SECRET) -> FastAPI:
    app = service_app("orders", readiness=Readiness({}), telemetry=Telemetry("orders"), subject_secret=secret)

    @app.get("/api/me")
    async def me(subject: str = Depends(required_subject)) -> dict[str, Any]:
        return {"subject": subject}

    return app


def client(secret: str | None = SECRET) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app_seeing_subject(secret)), base_url="http://orders"
    )


def fresh(subject: str, method: str, path: str, service: str = "orders") -> dict[str, str]:
    encoded = encode_subject(subject)
    return {
        SUBJECT_HEADER: encoded,
        SIGNATURE_HEADER: sign_subject(SECRET, encoded, method=method, path=path.encode(), service=service),
    }


def assert_refused(response: httpx.Response, *words: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == 401 and body["instance"] == response.request.url.path
    for word in words:
        assert word in body["detail"], body
    return body


async def test_a_subject_the_gateway_signed_reaches_the_handler_decoded() -> None:
    async with client() as orders:
        response = await orders.get("/api/me", auth=SignedSubject(SECRET, "josé", service="orders"))
    assert response.status_code == 200, response.text
    assert response.json() == {"subject": "josé"}


async def test_a_route_that_needs_a_subject_is_401_without_one() -> None:
    async with client() as orders:
        assert_refused(await orders.get("/api/me"), "no authenticated subject")


async def test_an_unsigned_or_forged_subject_is_401_not_stripped() -> None:
    async with client() as orders:
        assert_refused(await orders.get("/api/me", headers={SUBJECT_HEADER: "mallory"}), SIGNATURE_HEADER)
        forged = {SUBJECT_HEADER: "mallory", SIGNATURE_HEADER: f"t={int(time.time())},v2={'0' * 64}"}
        assert_refused(await orders.get("/api/me", headers=forged), "does not match")
        alone = {SIGNATURE_HEADER: fresh("alice", "GET", "/api/me")[SIGNATURE_HEADER]}
        assert_refused(await orders.get("/api/me", headers=alone), "without X-Lantern-Subject")


@pytest.mark.parametrize("header", [SUBJECT_HEADER, SIGNATURE_HEADER])
async def test_a_duplicate_subject_header_is_401_naming_it(header: str) -> None:
    headers = list(fresh("alice", "GET", "/api/me").items())
    headers.append((header, dict(headers)[header]))
    async with client() as orders:
        assert_refused(await orders.get("/api/me", headers=headers), f"{header} was sent 2 times")


async def test_a_signature_for_another_path_method_or_service_is_401() -> None:
    async with client() as orders:
        for headers in (
            fresh("alice", "GET", "/api/orders"),
            fresh("alice", "POST", "/api/me"),
            fresh("alice", "GET", "/api/me", service="payments"),
        ):
            assert_refused(await orders.get("/api/me", headers=headers), "does not match")


async def test_a_non_ascii_header_value_is_a_401_not_a_500() -> None:
    raw = [
        (SUBJECT_HEADER.encode(), "josé".encode()),
        (SIGNATURE_HEADER.encode(), f"t={int(time.time())},v2={'é' * 64}".encode()),
    ]
    async with client() as orders:
        assert_refused(await orders.get("/api/me", headers=raw), "percent-encoded ASCII")
        raw[0] = (SUBJECT_HEADER.encode(), b"alice")
        assert_refused(await orders.get("/api/me", headers=raw), "not of the form")


async def test_a_service_without_the_key_trusts_no_subject_and_drops_every_copy() -> None:
    headers = [*fresh("alice", "GET", "/api/me").items(), (SUBJECT_HEADER, "root")]
    async with client(secret=None) as payments:
        assert_refused(await payments.get("/api/me", headers=headers), "no authenticated subject")


async def test_the_subject_is_not_read_from_a_header_the_middleware_did_not_verify() -> None:
    """subject_of reads what TrustedSubject verified, not the header."""
    app = FastAPI()

    @app.get("/api/me")
    async def me(subject: str | None = Depends(subject_of)) -> dict[str, Any]:
        return {"subject": subject}

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as bare:
        response = await bare.get("/api/me", headers=fresh("alice", "GET", "/api/me"))
    assert response.json() == {"subject": None}
