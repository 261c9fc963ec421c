"""`python -m devstack` runs the platform locally; `python -m devstack traces` prints the latest
traces as waterfalls (what `lantern --local trace --last N` prints)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from devstack.private import private_directory
from devstack.stack import Stack, amqp_reachable, development_secret, jaeger_command, port_free

WORKDIR = Path(os.environ.get("LANTERN_DEV_DIR", ".lantern"))
# A day is long enough for a working session; `make run` prints a fresh token each start.
TOKEN_TTL = 24 * 3600.0
EXAMPLE = """\
curl -si -X POST {gateway}/api/orders -H 'Authorization: Bearer {token}' \\
  -H 'Content-Type: application/json' -H "Idempotency-Key: $(uuidgen || date +%s%N)" \\
  -d '{{"items": [{{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}}]}}'"""


def run() -> int:
    # GATEWAY_JWT_SECRET wins; otherwise one made once and kept in the dev dir.
    secret = os.environ.get("GATEWAY_JWT_SECRET") or development_secret(WORKDIR / "jwt-secret")
    stack = Stack(
        WORKDIR,
        amqp_url=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/"),
        jwt_secret=secret,
    )
    problem = amqp_reachable(stack.amqp_url)
    if problem:
        print(
            f"RabbitMQ is not reachable at AMQP_URL={stack.amqp_url} ({problem}).\n"
            "Start it with `rabbitmq-server -detached` (or `docker run -p 5672:5672 rabbitmq:4`), "
            "or point AMQP_URL at one.",
            file=sys.stderr,
        )
        return 1
    busy = [f"{name}:{port}" for name, port in stack.ports.items() if not port_free(port)]
    if busy:
        print(
            f"ports already in use: {', '.join(busy)}; is `make run` running already?",
            file=sys.stderr,
        )
        return 1

    stack.otlp_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    # Our own Jaeger only when spans go nowhere else; looked up once (it may ask Docker).
    jaeger = jaeger_command() if stack.otlp_endpoint is None else None
    if jaeger:
        stack.otlp_endpoint = "http://127.0.0.1:4318"
    private_directory(WORKDIR)
    if jaeger:
        stack.start_process("jaeger", jaeger, dict(os.environ))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        stack.start()
        stack.wait_ready()
    except (RuntimeError, TimeoutError) as error:
        print(f"the platform did not start: {error}", file=sys.stderr)
        stack.stop()
        return 1

    gateway = stack.url("gateway")
    print(f"\nLantern is up: {', '.join(f'{s} {stack.url(s)}' for s in stack.services)}")
    print(f"Gateway: {gateway}   logs: {stack.log_dir}/*.log")
    if jaeger:
        print("Jaeger UI: http://127.0.0.1:16686")
    elif stack.otlp_endpoint:
        print(f"Spans go to {stack.otlp_endpoint}")
    else:
        print("Traces: `make traces` draws the latest ones as waterfalls")
    token = stack.auth_headers(subject="developer", ttl=TOKEN_TTL)["Authorization"].removeprefix("Bearer ")
    print(f"\nA token with scopes orders:write and orders:read, valid for 24 h:\n{token}")
    print(f"\nTry:\n{EXAMPLE.format(gateway=gateway, token=token)}\n\nCtrl-C stops everything.", flush=True)

    while not stopping.wait(1.0):
        died = [name for name, p in stack.processes.items() if p.poll() is not None]
        if died:
            print(f"stopped because {', '.join(died)} exited; see {stack.log_dir}", file=sys.stderr)
            break
    print("stopping…", flush=True)
    stack.stop()
    print("stopped.")
    return 0


def traces(last: int) -> int:
    """The latest traces as waterfalls, read through the trace query API (sink or Jaeger)."""
    from lantern_cli.__main__ import main as lantern

    return lantern(["--local", "trace", "--last", str(last)])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    show = commands.add_parser("traces", help="print the latest traces as waterfalls")
    show.add_argument("--last", type=int, default=3)
    args = parser.parse_args()
    if args.command == "traces":
        return traces(args.last)
    return run()


sys.exit(main())
