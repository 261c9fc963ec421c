"""Benchmark 5, soak: the platform under a steady load through the gateway for minutes, many
retry-budget windows (10 s) long, sampling every service's resident set as it goes, to show
whether memory levels off or keeps climbing with the work done.

Work is counted as it happens, from a queue of the bench's own bound to every event on
`lantern.events`: each order is one POST through the gateway (and one HTTP request each at
orders and bank) and three events (order.created, payment.authorized, order.confirmed). RSS is
fitted against both counts after a warm-up. At a steady load the two grow together, so a slope
per 10k requests and one per 10k messages are the same growth in two units.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aio_pika
import psutil

from bench.infra import fresh_database, python_env, workplace
from bench.platform import running
from bench.report import RESULTS_DIR, Benchmark, Metric
from bench.saga import load_args
from devstack.stack import SERVICES, WITH_DATABASE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SAMPLE_SECONDS = 2.0
# Below what the five services complete on two cores (about 25/s), so no backlog builds up: a
# backlog held in memory would look like growth.
RATE = 20.0
# A service still growing by more than this over the last third of the run, per 10k requests, is
# called out as not levelling off. The first third after the warm-up is reported beside it: that
# is where allocator arenas, connection pools and caches fill. RSS of an idle CPython service
# moves by a megabyte or so between samples; fitted over the last third of a full run (about
# 3,000 requests, 100 samples) that noise is a fraction of this.
CLIMBING_MB_PER_10K = 1.0
# bank keeps its latest authorizations in memory, 100,000 by default: an hour of orders at 25/s,
# longer than a soak. A smaller ledger is reached within the warm-up, so the soak shows the bound
# at work rather than the ledger filling up.
SOAK_ENV = {"BANK_LEDGER_SIZE": "1000"}
OUTCOMES = ("order.confirmed", "order.cancelled")
DATABASES = {"sqlite": "SQLite, as `make run`", "postgres": "PostgreSQL, a fresh database per service"}
# What a platform runs on in Kubernetes, so the default; SQLite where no PostgreSQL answers.
DEFAULT_DATABASE = "auto"


@dataclass
class Series:
    """What the soak saw every SAMPLE_SECONDS: elapsed seconds, work done so far, RSS per service."""

    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)


class EventCounter:
    """Counts every event on lantern.events, by type, from a thread of its own."""

    def __init__(self, amqp_url: str) -> None:
        self._amqp_url = amqp_url
        self.by_type: dict[str, int] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> EventCounter:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the soak's event counter did not connect to RabbitMQ in 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def requests(self) -> int:
        # One order.created per POST the gateway accepted.
        return self.by_type.get("order.created", 0)

    @property
    def messages(self) -> int:
        return sum(self.by_type.values())

    async def _run(self) -> None:
        connection = await aio_pika.connect(self._amqp_url)
        async with connection:
            channel = await connection.channel()
            events = await channel.get_exchange("lantern.events", ensure=True)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(events, routing_key="#")

            async def count(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                key = message.routing_key or ""
                self.by_type[key] = self.by_type.get(key, 0) + 1

            await queue.consume(count, no_ack=True)
            self._ready.set()
            while not self._stop.is_set():  # noqa: ASYNC110 - a thread's stop flag, not an asyncio one
                await asyncio.sleep(0.2)


def slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares MB per unit of x; 0 where x did not move."""
    if len(xs) < 3 or len(set(xs)) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope


def analyse(series: Series, warmup: float) -> dict[str, dict[str, float]]:
    """Per service: RSS after warm-up and at the end, growth per 10k requests and messages fitted
    after warm-up, and the same per 10k requests over the first and the last third of that
    stretch."""
    # Only while orders are being placed: after the last one, the load waits for outcomes and the
    # services idle, and RSS moving at a standstill of x is no slope per request.
    loaded = series.requests.index(series.requests[-1]) + 1
    after = [i for i in range(loaded) if series.seconds[i] >= warmup]
    third = max(3, len(after) // 3)
    early, late = after[:third], after[-third:]
    requests = [series.requests[i] for i in after]
    messages = [series.messages[i] for i in after]
    found = {}
    for service, rss in series.rss_mb.items():
        ys = [rss[i] for i in after]
        first = slope([series.requests[i] for i in early], [rss[i] for i in early])
        last = slope([series.requests[i] for i in late], [rss[i] for i in late])
        found[service] = {
            "idle_mb": rss[0],
            "warm_mb": ys[0],
            "end_mb": ys[-1],
            "max_mb": max(rss),
            "per_10k_requests": slope(requests, ys) * 10_000,
            "per_10k_messages": slope(messages, ys) * 10_000,
            "first_third_per_10k_requests": first * 10_000,
            "last_third_per_10k_requests": last * 10_000,
        }
    return found


def levels_off(figures: dict[str, float]) -> bool:
    """Levelled off: over the last third of the run the service grows by at most
    CLIMBING_MB_PER_10K per 10k requests. No allowance for slowing down: a service that still
    climbs, however much less than before, is called out."""
    return figures["last_third_per_10k_requests"] <= CLIMBING_MB_PER_10K


def _rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


def soak(stack: Any, amqp_url: str, rate: float, seconds: float) -> tuple[Series, dict[str, Any]]:
    """Drive `rate` orders/s for `seconds` through the gateway, sampling as it runs; returns the
    series and the load generator's own summary."""
    processes = {service: psutil.Process(stack.processes[service].pid) for service in SERVICES}
    series = Series(rss_mb={service: [] for service in SERVICES})
    orders = round(rate * seconds)
    with EventCounter(amqp_url) as counter:

        def sample(started: float) -> None:
            series.seconds.append(time.monotonic() - started)
            series.requests.append(counter.requests)
            series.messages.append(counter.messages)
            for service, process in processes.items():
                series.rss_mb[service].append(_rss_mb(process))

        started = time.monotonic()
        sample(started)
        load = subprocess.Popen(  # noqa: S603 - the suite's own load generator
            [sys.executable, "-m", "bench.order_load", *load_args(stack, amqp_url, rate, orders)],
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Bounded: the load's own length plus its wait for the last outcomes, and a margin.
        deadline = started + seconds + 120
        next_sample = started + SAMPLE_SECONDS
        while load.poll() is None:
            if time.monotonic() > deadline:
                load.kill()
                raise RuntimeError(f"the soak's load ran past {seconds + 120:.0f} s")
            time.sleep(max(0.0, next_sample - time.monotonic()))
            next_sample += SAMPLE_SECONDS
            sample(started)
            done = len(series.seconds)
            if done % 30 == 0:
                print(
                    f"  soak {series.seconds[-1]:5.0f} s  {counter.requests:6d} orders  "
                    + ", ".join(f"{s} {series.rss_mb[s][-1]:.0f} MB" for s in SERVICES),
                    flush=True,
                )
        stdout, stderr = load.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if load.returncode != 0 or not lines:
            raise RuntimeError(f"bench.order_load failed with exit code {load.returncode}:\n{stderr[-3000:]}")
        # Idle again: what the services keep once the work has stopped.
        time.sleep(5)
        sample(started)
    summary: dict[str, Any] = json.loads(lines[-1])
    return series, summary


@contextmanager
def databases(kind: str, tmp: Path) -> Iterator[str]:
    """Point every service with a database at `kind`: SQLite files in the stack's directory, as
    `make run` does, or a fresh PostgreSQL database each (devstack reads SERVICE_DATABASE_URL),
    dropped afterwards; `auto`: PostgreSQL if it answers at LANTERN_BENCH_POSTGRES, else SQLite.
    Yields which of DATABASES was used."""
    if kind == "sqlite":
        yield "sqlite"
        return
    with ExitStack() as stack:
        urls = {service: stack.enter_context(fresh_database(tmp)) for service in WITH_DATABASE}
        if any(url.startswith("sqlite") for url in urls.values()):
            if kind == "auto":
                yield "sqlite"
                return
            raise RuntimeError("the soak on PostgreSQL found no PostgreSQL at LANTERN_BENCH_POSTGRES")
        saved = {f"{s.upper()}_DATABASE_URL": os.environ.get(f"{s.upper()}_DATABASE_URL") for s in urls}
        os.environ.update({f"{s.upper()}_DATABASE_URL": url for s, url in urls.items()})
        try:
            yield "postgres"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def benchmark(rate: float, seconds: float, warmup: float, database: str = DEFAULT_DATABASE) -> Benchmark:
    orders = round(rate * seconds)
    result = Benchmark(
        name="soak",
        title=(
            f"Soak: RSS of each service under {rate:.0f} orders/s through the gateway for "
            f"{seconds:.0f} s ({seconds / 10:.0f} retry-budget windows), fitted after {warmup:.0f} s"
        ),
        metrics=[
            Metric("warm_mb", "after warm-up", "MB", False),
            Metric("end_mb", "end", "MB", False),
            Metric("per_10k_requests", "slope", "MB/10k req", False),
            Metric("per_10k_messages", "slope", "MB/10k msg", False),
            Metric("first_third_per_10k_requests", "1st third", "MB/10k req", False),
            Metric("last_third_per_10k_requests", "last third", "MB/10k req", False),
        ],
        baseline="",
        variants=list(SERVICES),
        notes=[
            f"bank with BANK_LEDGER_SIZE={SOAK_ENV['BANK_LEDGER_SIZE']} (its bound, reached in the warm-up)",
            "requests = POSTs the gateway accepted (each is also one request at orders and one at bank); "
            "messages = events on lantern.events (3 an order); slopes are least-squares fits of RSS "
            "against each, after the warm-up; the thirds are its first and last",
            f"a service levels off when its last-third slope is at most {CLIMBING_MB_PER_10K} MB "
            "per 10k requests",
        ],
    )
    with (
        workplace() as (amqp_url, tmp, endpoint),
        databases(database, tmp) as used,
        running(tmp / "soak", amqp_url, traced=True, otlp_endpoint=endpoint, env=SOAK_ENV) as stack,
    ):
        time.sleep(5)
        series, summary = soak(stack, amqp_url, rate, seconds)
    result.notes.insert(
        0,
        f"traced (always-on, OTLP/HTTP to a trace sink), {DATABASES[used]}; open-loop POSTs "
        f"through the gateway, RSS (psutil) every {SAMPLE_SECONDS:.0f} s",
    )
    figures = analyse(series, warmup)
    for service, found in figures.items():
        result.add(service, found)
        if not levels_off(found):
            result.notes.append(
                f"{service} has not levelled off: {found['last_third_per_10k_requests']:+.2f} MB per 10k "
                f"requests over the last third ({found['first_third_per_10k_requests']:+.2f} over the 1st)"
            )
    result.notes.append(
        f"load: {summary['placed']} of {orders} orders accepted, {summary['completed']} completed, "
        f"{summary['errors']} failed{_why(summary)}, "
        f"{summary['orders_per_s']:.1f}/s; {series.requests[-1]} requests and "
        f"{series.messages[-1]} messages counted; series in {_write_series(series)}"
    )
    return result


def _why(summary: dict[str, Any]) -> str:
    """The load's failures by kind, e.g. ` (503: upstream unavailable: 1)`; nothing if none."""
    kinds = summary.get("error_kinds") or {}
    return " (" + "; ".join(f"{kind}: {n}" for kind, n in kinds.items()) + ")" if kinds else ""


def _write_series(series: Series) -> Path:
    """The samples themselves, beside the suite's results, for plotting or a fit of one's own."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"soak-series-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(vars(series)))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.soak [--database auto|sqlite|postgres] [--seconds S] [--warmup S] [--rate R]`:
    the soak alone, e.g. on SQLite as `make run` has it, or for longer."""
    import argparse

    from bench.report import write_results

    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--database", choices=("auto", "sqlite", "postgres"), default=DEFAULT_DATABASE)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=RATE)
    args = parser.parse_args(argv)
    result = benchmark(args.rate, args.seconds, args.warmup, args.database)
    print(result.table() + "\n")
    print(f"results: {write_results([result], 'python -m bench.soak ' + ' '.join(sys.argv[1:]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
