"""`python -m lantern_runtime.smoke`: send one order through the gateway and check, through
Jaeger's query API, that its trace satisfies the trace contract. Used by `helm test`."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import httpx
import jwt

from lantern_runtime.trace_contract import check_trace, order_flow_chain, render_tree
from lantern_runtime.trace_formats import spans_from_jaeger_json

SMOKE_SCOPES = ("orders:write", "orders:read")
ORDER = {"customer_id": "smoke-test", "items": [{"sku": "smoke", "quantity": 1, "unit_price": "1.00"}]}


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


def check_in_jaeger(jaeger: httpx.Client, trace_id: str, deadline: float) -> tuple[list[str], str]:
    problems, tree = ["the trace did not reach Jaeger"], ""
    while problems and time.monotonic() < deadline:
        response = jaeger.get(f"/api/traces/{trace_id}")
        if response.status_code == 200:
            spans = spans_from_jaeger_json(response.json())
            problems, tree = check_trace(spans, order_flow_chain("authorized")), render_tree(spans)
        time.sleep(1.0)
    return problems, tree


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
    deadline = time.monotonic() + args.timeout
    with (
        httpx.Client(
            base_url=args.gateway, timeout=10, headers={"Authorization": f"Bearer {args.token}"}
        ) as gateway,
        httpx.Client(base_url=args.jaeger, timeout=10) as jaeger,
    ):
        order_id, trace_id = place_order(gateway)
        print(f"order {order_id}, trace {trace_id}", flush=True)
        status = wait_for_status(gateway, order_id, deadline)
        if status != "confirmed":
            print(f"FAIL: the order ended {status!r}, not 'confirmed'")
            return 1
        problems, tree = check_in_jaeger(jaeger, trace_id, deadline)
    print(tree)
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print("OK: the order is confirmed and its trace satisfies the contract")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
