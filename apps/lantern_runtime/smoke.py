"""`python -m lantern_runtime.smoke`: send one order through the gateway and check, through
Jaeger's query API, that its trace satisfies the trace contract. Used by `helm test`."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import jwt

from lantern_runtime.jaeger_query import JaegerQuery, TraceNotFound
from lantern_runtime.trace_contract import check_trace, order_flow_chain, render_tree
from lantern_runtime.trace_formats import spans_from_jaeger_json

if TYPE_CHECKING:
    from collections.abc import Callable

SMOKE_SCOPES = ("orders:write", "orders:read")
ORDER = {"items": [{"sku": "smoke", "quantity": 1, "unit_price": "1.00"}]}


def mint_token(secret: str, *, ttl: int = 300, issuer: str | None = None, audience: str | None = None) -> str:
    """A short-lived HS256 token with the smoke test's scopes, for a gateway that checks
    GATEWAY_JWT_SECRET (development and kind); the claims are those gateway.auth requires."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "helm-test",
        "scope": " ".join(SMOKE_SCOPES),
        "iat": now,
        "exp": now + ttl,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def place_order(gateway: httpx.Client) -> tuple[str, str]:
    """Returns (order_id, trace_id) of a freshly placed order."""
    response = gateway.post("/api/orders", json=ORDER, headers={"Idempotency-Key": str(uuid.uuid4())})
    if response.status_code != 202:
        raise SystemExit(f"the gateway answered {response.status_code}: {response.text}")
    trace_id = response.headers["traceresponse"].split("-")[1]
    return response.json()["order_id"], trace_id


def wait_for_status(gateway: httpx.Client, order_id: str, deadline: float) -> str:
    status = "pending"
    while status == "pending" and time.monotonic() < deadline:
        status = gateway.get(f"/api/orders/{order_id}").json()["status"]
        time.sleep(0.5)
    return str(status)


def check_in_jaeger(jaeger: JaegerQuery, trace_id: str, deadline: float) -> tuple[list[str], str]:
    """The contract's verdict on the trace once it is whole, or its last verdict at the deadline."""
    problems, tree = ["the trace did not reach Jaeger"], ""
    while problems and time.monotonic() < deadline:
        try:
            spans = spans_from_jaeger_json(jaeger.trace(trace_id))
        except TraceNotFound:
            pass
        else:
            problems, tree = check_trace(spans, order_flow_chain("authorized")), render_tree(spans)
        if problems:
            time.sleep(1.0)
    return problems, tree


def run_smoke(
    gateway_url: str, jaeger_url: str, token: str, *, timeout: float, say: Callable[[str], None] = print
) -> int:
    """Place one order through the gateway and check its trace; 0 when both are as they must be.

    Raises QueryUnreachable (lantern_runtime.jaeger_query) when the query API does not answer."""
    deadline = time.monotonic() + timeout
    bearer = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=gateway_url, timeout=10, headers=bearer) as gateway,
        JaegerQuery(jaeger_url) as jaeger,
    ):
        order_id, trace_id = place_order(gateway)
        say(f"order {order_id}, trace {trace_id}")
        status = wait_for_status(gateway, order_id, deadline)
        if status != "confirmed":
            say(f"FAIL: the order ended {status!r}, not 'confirmed'")
            return 1
        problems, tree = check_in_jaeger(jaeger, trace_id, deadline)
    say(tree)
    for problem in problems:
        say(f"FAIL: {problem}")
    if not problems:
        say("OK: the order is confirmed and its trace satisfies the contract")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    """The command line; `helm test` (charts/lantern/templates/tests/smoke.yaml) passes
    --gateway, --jaeger, --timeout from smokeTest.timeoutSeconds and, with development
    keys, --hs256-secret-env."""
    parser = argparse.ArgumentParser(prog="python -m lantern_runtime.smoke", description=__doc__)
    parser.add_argument("--gateway", required=True, help="e.g. http://gateway:8080")
    parser.add_argument("--jaeger", required=True, help="Jaeger query, e.g. http://jaeger:16686")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds for the whole check")
    parser.add_argument(
        "--token",
        default=os.environ.get("LANTERN_SMOKE_TOKEN"),
        help="bearer token with scopes orders:write and orders:read (default: $LANTERN_SMOKE_TOKEN)",
    )
    parser.add_argument(
        "--hs256-secret-env",
        metavar="NAME",
        help="mint a short-lived HS256 token from the secret in this environment variable "
        "(e.g. GATEWAY_JWT_SECRET), with GATEWAY_JWT_ISSUER/GATEWAY_JWT_AUDIENCE when set",
    )
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.hs256_secret_env:
        secret = os.environ.get(args.hs256_secret_env)
        if not secret:
            parser.error(
                f"--hs256-secret-env {args.hs256_secret_env}: that environment variable is unset or empty"
            )
        args.token = mint_token(
            secret,
            ttl=max(300, round(args.timeout) + 60),
            issuer=os.environ.get("GATEWAY_JWT_ISSUER"),
            audience=os.environ.get("GATEWAY_JWT_AUDIENCE"),
        )
    if not args.token:
        parser.error(
            "the gateway needs a bearer token: pass --token, set LANTERN_SMOKE_TOKEN or --hs256-secret-env"
        )
    return run_smoke(
        args.gateway, args.jaeger, args.token, timeout=args.timeout, say=lambda line: print(line, flush=True)
    )


if __name__ == "__main__":
    sys.exit(main())
