"""An open-loop order generator in a process of its own: POST orders through the gateway at a
fixed rate and time each one until its outcome event (order.confirmed or order.cancelled)
appears on the broker.

    python -m bench.order_load --gateway URL --amqp-url URL --token T --rate 50 --orders 1000

The outcome is observed on a queue of the bench's own, bound to the events exchange, so the
measurement adds no polling load to the services. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import time
import uuid
from typing import Any

import aio_pika
import httpx

ORDER = {"items": [{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}]}
OUTCOMES = ("order.confirmed", "order.cancelled")


async def run(
    gateway: str, amqp_url: str, token: str, rate: float, orders: int, drain: float, in_flight: int
) -> dict[str, Any]:
    """Offer `rate` orders/s; or, with `in_flight`, keep that many orders unfinished at any time
    (closed loop: as fast as the platform completes them, with no backlog building up)."""
    placed: dict[str, float] = {}
    finished: dict[str, float] = {}
    # Why each failed order failed: a status code, or the client's exception.
    errors: collections.Counter[str] = collections.Counter()
    all_done = asyncio.Event()
    window = asyncio.Semaphore(in_flight or orders)

    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    events = await channel.get_exchange("lantern.events", ensure=True)
    outcomes = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in OUTCOMES:
        await outcomes.bind(events, routing_key=key)

    async def on_outcome(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            order_id = json.loads(message.body)["order_id"]
            if order_id not in finished:
                finished[order_id] = time.perf_counter()
                window.release()
            if len(finished) >= orders:
                all_done.set()

    await outcomes.consume(on_outcome)

    async def place(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            response = await client.post(
                "/api/orders", json=ORDER, headers={"Idempotency-Key": str(uuid.uuid4())}
            )
        except httpx.HTTPError as error:
            errors[f"{type(error).__name__}: {error}"[:200]] += 1
            window.release()
            return
        if response.status_code != 202:
            errors[f"{response.status_code}: {response.text}"[:200]] += 1
            window.release()
            return
        placed[response.json()["order_id"]] = started

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=gateway, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(orders):
            if in_flight:
                await window.acquire()
            else:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(place(client)))
        await asyncio.gather(*tasks)
        offered_s = time.perf_counter() - start
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), drain)
    await connection.close()

    latencies = sorted(finished[o] - placed[o] for o in placed if o in finished)
    count = len(latencies)
    last = max((finished[o] for o in placed if o in finished), default=start)
    return {
        "offered_per_s": orders / offered_s,
        "placed": len(placed),
        "completed": count,
        "errors": errors.total(),
        "error_kinds": dict(errors),
        "orders_per_s": count / (last - start) if count else 0.0,
        "p50_ms": latencies[count // 2] * 1000 if count else 0.0,
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.order_load")
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="orders per second offered")
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=0, help="closed loop: orders unfinished at a time")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last outcomes")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.gateway, args.amqp_url, args.token, args.rate, args.orders, args.drain, args.in_flight)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
