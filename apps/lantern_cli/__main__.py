"""lantern: the operator's view of a Lantern platform, the same commands on a laptop and a cluster.

Where: `--local` is the stack `make run` runs; otherwise the Helm release `--release` (lantern)
in `--namespace` (the context's, else lantern) of the kubeconfig's current context or
`--context`, as kubectl reads it (inside a pod without one, its service account). Jaeger,
RabbitMQ and the gateway of a cluster are reached through port-forwards this command opens.

Exit status: 0 all well, 1 something unhealthy or failed, 2 the command could not run (one line
on stderr says why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from lantern_cli import commands
from lantern_cli.errors import Refused
from lantern_cli.targets import Target
from lantern_runtime.jaeger_query import QueryUnreachable, TraceNotFound


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lantern", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_argument_group("where")
    where.add_argument("--local", action="store_true", help="the local stack of `make run`")
    where.add_argument("--context", help="kubeconfig context (default: the current one)")
    where.add_argument(
        "-n", "--namespace", help="namespace of the release (default: the context's, else lantern)"
    )
    where.add_argument("--release", default="lantern", help="Helm release name (default: lantern)")
    where.add_argument("--jaeger", metavar="URL", help="a Jaeger query API to use instead of the target's")
    parser.add_argument("--no-color", action="store_true", help="no ANSI colours (also off when not a tty)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("status", help="components, restarts, readiness and queue depths; exit 1 if unhealthy")

    trace = sub.add_parser("trace", help="a trace as a waterfall, by trace id or order id")
    trace.add_argument("ref", nargs="?", metavar="TRACE_ID|ORDER_ID", help="omit for the latest traces")
    trace.add_argument("--last", type=int, default=3, help="how many of the latest traces, without an id")
    trace.add_argument("--json", action="store_true", help="Jaeger's own JSON instead of the waterfall")
    trace.add_argument("--width", type=int, help="characters of the time axis")

    smoke = sub.add_parser("smoke", help="the helm-test smoke: one order, its trace checked by the contract")
    smoke.add_argument("--timeout", type=float, default=90.0)
    smoke.add_argument(
        "--token",
        default=os.environ.get("LANTERN_SMOKE_TOKEN"),
        help="bearer token (default: $LANTERN_SMOKE_TOKEN, else one minted from the development secret)",
    )

    dead = sub.add_parser("dead-letters", help="list or replay dead letters").add_subparsers(
        dest="action", required=True
    )
    listing = dead.add_parser("list", help="each dead letter: queue, id, type, attempts, reason")
    listing.add_argument("--queue", action="append", help="work queue; repeat for more (default: all)")
    again = dead.add_parser("replay", help="put dead letters back on their work queue, attempt 1")
    again.add_argument("--queue", required=True)
    again.add_argument("--message-id")
    again.add_argument("--limit", type=int)

    token = sub.add_parser("token", help="a development token signed with the gateway's secret")
    token.add_argument("--scopes", default="orders:write,orders:read", help="comma-separated")
    token.add_argument("--subject", default="operator")
    token.add_argument(
        "--ttl", type=float, default=3600.0, help="seconds (default: 3600, at most 86400: 24 h)"
    )

    new = sub.add_parser("new-service", help="add a consumer service (docs/adding-a-service.md)")
    new.add_argument("name", help="lowercase letters and digits: package, Service and database name")
    new.add_argument("--consumes", action="append", required=True, metavar="EVENT", help="repeat for more")
    new.add_argument("--database", action="store_true", help="its own database, migrations and inbox")
    new.add_argument("--port", type=int, help="default: the next after the components' ports")
    return parser


def choose_target(args: argparse.Namespace) -> Target:
    if args.local:
        if args.context or args.namespace:
            raise Refused("--local is the local stack; it takes no --context or --namespace")
        from lantern_cli.local import LocalStack

        return LocalStack()
    try:
        from lantern_cli.cluster import Cluster, connect
    except ImportError as error:
        raise Refused(
            f"the cluster commands need the kubernetes client ({error.name} is missing): "
            "pip install 'lantern[cli]', or use --local"
        ) from error

    configuration, context_namespace = connect(args.context)
    return Cluster(configuration, args.namespace or context_namespace or "lantern", args.release)


def _axis_width(requested: int | None) -> int:
    if requested:
        return max(10, requested)
    if not sys.stdout.isatty():
        return 40
    return max(20, min(80, shutil.get_terminal_size((120, 24)).columns - 90))


def run(args: argparse.Namespace) -> int:
    if args.command == "new-service":
        from pathlib import Path

        from lantern_cli.new_service import new_service

        return new_service(Path.cwd(), args.name, args.consumes, database=args.database, port=args.port)
    if args.command == "token":
        scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
        if not scopes:
            raise Refused("--scopes names no scope; e.g. --scopes orders:write,orders:read")
        # Before a target is chosen: a cluster target connects to the cluster.
        commands.token_ttl(args.ttl)
    target = choose_target(args)
    if args.command == "status":
        return commands.status(target)
    if args.command == "trace":
        color = not args.no_color and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        return commands.trace(
            target,
            args.ref,
            last=args.last,
            as_json=args.json,
            color=color,
            width=_axis_width(args.width),
            query_url=args.jaeger,
        )
    if args.command == "smoke":
        return commands.smoke(target, token=args.token, timeout=args.timeout, query_url=args.jaeger)
    if args.command == "dead-letters" and args.action == "list":
        return commands.dead_letters_list(target, args.queue)
    if args.command == "dead-letters":
        return commands.dead_letters_replay(target, args.queue, message_id=args.message_id, limit=args.limit)
    return commands.token(target, scopes=scopes, subject=args.subject, ttl=args.ttl)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (Refused, QueryUnreachable, TraceNotFound) as error:
        print(f"lantern: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
