"""The commands, each written once against a Target (lantern_cli.targets): local stack or cluster.

Each returns the exit status: 0 when all is well, 1 when something is unhealthy or failed.
What cannot be done at all raises Refused, which the entry point prints as one line (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING

import aio_pika
import httpx

from gateway.auth import issue_token
from lantern_cli.errors import Refused
from lantern_cli.queues import queue_depths
from lantern_cli.waterfall import render_waterfall
from lantern_runtime.jaeger_query import JaegerQuery
from lantern_runtime.messaging import redacted_url
from lantern_runtime.messaging.deadletters import DeadQueueNeedsMigration, list_dead_letters, replay
from lantern_runtime.smoke import SMOKE_SCOPES, run_smoke
from lantern_runtime.trace_formats import spans_from_jaeger_json
from order_flow.topology import ORDER_FLOW

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence
    from typing import Any, TypeVar

    from lantern_cli.targets import Target

    T = TypeVar("T")

TRACE_ID = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")
# No span carries an order id as such; the orders service publishes order.created with the
# message id `<order id>:order.created` (messaging.message.id), which finds the order's trace.
ORDER_TAG = "messaging.message.id"
# How far back an order's trace or the latest traces are looked for.
ORDER_LOOKBACK, LATEST_LOOKBACK = "7d", "1d"
# A minted token is for a working session (make run's lasts a day); a longer-lived one is a
# credential that outlives its purpose, and the gateway cannot revoke it.
MAX_TOKEN_TTL = 24 * 3600.0


def status(target: Target) -> int:
    print(f"lantern status: {target.description}")
    components = target.components()
    rows = [
        (
            c.name,
            f"{c.ready}/{c.desired}",
            "-" if c.restarts is None else str(c.restarts),
            c.last_reason or "-",
            c.image or "-",
            "ok" if c.healthy else "UNHEALTHY",
            c.note,
        )
        for c in components
    ]
    _table(("COMPONENT", "READY", "RESTARTS", "LAST REASON", "IMAGE", "STATE", ""), rows)
    healthy = all(c.healthy for c in components)
    try:
        with target.broker() as amqp_url:
            depths = queue_depths(amqp_url)
    except Refused as error:
        print(f"\nqueues: cannot be read: {error}")
        return 1

    def shown(count: int | None) -> str:
        return "missing" if count is None else str(count)

    print()
    _table(
        ("QUEUE", "WORK", "RETRY", "DEAD", "STATE"),
        [
            (d.queue, shown(d.work), shown(d.retry), shown(d.dead), "ok" if d.healthy else "UNHEALTHY")
            for d in depths
        ],
    )
    return 0 if healthy and all(d.healthy for d in depths) else 1


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def trace(
    target: Target,
    ref: str | None,
    *,
    last: int,
    as_json: bool,
    color: bool,
    width: int,
    query_url: str | None,
) -> int:
    with target.trace_query() as found_url, JaegerQuery(query_url or found_url) as jaeger:
        if ref is None:
            documents = _latest(jaeger, last)
            if not documents:
                print(f"no traces in the trace query API at {jaeger.base_url} yet; did a request go through?")
                return 0
        elif TRACE_ID.fullmatch(ref):
            documents = [jaeger.trace(ref.lower())]
        else:
            found = jaeger.find(
                "orders", tags={ORDER_TAG: f"{ref}:order.created"}, limit=1, lookback=ORDER_LOOKBACK
            )
            if not found.get("data"):
                raise Refused(
                    f"{ref!r} is neither a trace id (32 hex digits) nor the id of an order whose trace "
                    f"is in the trace query API at {jaeger.base_url}"
                )
            documents = [jaeger.trace(found["data"][0]["traceID"])]
    for document in documents:
        if as_json:
            print(json.dumps(document, indent=2))
        else:
            print(render_waterfall(spans_from_jaeger_json(document), color=color, width=width))
            print()
    return 0


def _latest(jaeger: JaegerQuery, last: int) -> list[dict[str, Any]]:
    """The `last` newest traces of any service, oldest first, each as its own Jaeger document."""
    traces: dict[str, dict[str, Any]] = {}
    for service in jaeger.services():
        for found in jaeger.find(service, limit=last, lookback=LATEST_LOOKBACK).get("data") or []:
            traces.setdefault(found["traceID"], found)

    def started(found: dict[str, Any]) -> int:
        return min(int(span["startTime"]) for span in found["spans"])

    newest = sorted(traces.values(), key=started)[-last:]
    return [{"data": [found]} for found in newest]


def smoke(target: Target, *, token: str | None, timeout: float, query_url: str | None) -> int:
    if token is None:
        key = target.token_key()
        ttl = max(300, round(timeout) + 60)
        token = issue_token(
            key.secret,
            subject="lantern-smoke",
            scopes=SMOKE_SCOPES,
            ttl=ttl,
            issuer=key.issuer,
            audience=key.audience,
        )
    with target.gateway() as gateway, target.trace_query() as found_url:
        try:
            return run_smoke(
                gateway, query_url or found_url, token, timeout=timeout, say=lambda s: print(s, flush=True)
            )
        except httpx.TransportError as error:
            raise Refused(f"the gateway at {gateway} is unreachable: {error}") from error


def _on_broker(amqp_url: str, work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except DeadQueueNeedsMigration as error:
        raise Refused(str(error)) from error
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as error:
        raise Refused(f"the broker at {redacted_url(amqp_url)} is unreachable: {error}") from error


def dead_letters_list(target: Target, queues: list[str] | None) -> int:
    names = queues or [spec.name for spec in ORDER_FLOW.queues]
    with target.broker() as amqp_url:
        letters = _on_broker(amqp_url, list_dead_letters(amqp_url, names))
    for letter in letters:
        print(
            f"{letter.queue}\t{letter.message_id}\t{letter.message_type}\tattempts={letter.attempts}"
            f"\tpublisher={letter.publisher}\t{letter.reason}"
        )
    print(f"{len(letters)} dead letter(s)")
    return 0


def dead_letters_replay(target: Target, queue: str, *, message_id: str | None, limit: int | None) -> int:
    known = [spec.name for spec in ORDER_FLOW.queues]
    if queue not in known:
        raise Refused(f"--queue {queue!r} is not a queue of the order flow; it has {', '.join(known)}")
    with target.broker() as amqp_url:
        count = _on_broker(amqp_url, replay(amqp_url, queue, message_id=message_id, limit=limit))
    print(f"replayed {count} message(s) onto {queue}")
    return 0


def token_ttl(seconds: float) -> float:
    """`seconds` when a token may live that long; Refused naming the bounds otherwise."""
    # A token's expiry is in whole seconds, so less than one would be expired when minted.
    if not 1 <= seconds <= MAX_TOKEN_TTL:  # NaN is refused too
        raise Refused(
            f"--ttl {seconds:g} is out of range: a token lives at least 1 and at most "
            f"{MAX_TOKEN_TTL:g} seconds (24 h)"
        )
    return seconds


def token(target: Target, *, scopes: list[str], subject: str, ttl: float) -> int:
    ttl = token_ttl(ttl)
    key = target.token_key()
    print(
        issue_token(
            key.secret, subject=subject, scopes=scopes, ttl=ttl, issuer=key.issuer, audience=key.audience
        )
    )
    return 0
