"""Benchmark 2, the HTTP hop: gateway → orders, `GET /api/orders/{id}` of an existing order, at a
fixed concurrency: untraced (OTEL_SDK_DISABLED=true), and traced (always-on, OTLP/HTTP) with the
stock instrumentations, opentelemetry-instrumentation-fastapi for the server spans and -httpx for
the client span. Requests/s, latency, and CPU per request of the two services together."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import httpx
import psutil

from bench.infra import python_env, run_worker, workplace
from bench.platform import running
from bench.report import LATENCY_METRICS, Benchmark, Metric, Target, progress

if TYPE_CHECKING:
    from devstack.stack import Stack

VARIANTS = ("untraced", "traced")
SERVICES = ("orders", "gateway")
ORDER = {"items": [{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}]}
# After the load: time for the last batch of spans to be exported, whose CPU counts too.
SETTLE_SECONDS = 1.0


def _cpu_seconds(stack: Stack) -> float:
    """User and system CPU time so far of the services under test, all threads."""
    total = 0.0
    for service in SERVICES:
        times = psutil.Process(stack.processes[service].pid).cpu_times()
        total += times.user + times.system
    return total


def benchmark(rounds: int, seconds: float, concurrency: int = 16) -> Benchmark:
    result = Benchmark(
        name="http",
        title=f"HTTP hop, gateway -> orders GET /api/orders/{{id}}, {concurrency} conns, {seconds:.0f}s",
        metrics=[
            Metric("requests_per_s", "throughput", "req/s", True),
            *LATENCY_METRICS,
            Metric("cpu_us_per_request", "CPU", "us/req", False),
        ],
        baseline="untraced",
        variants=list(VARIANTS),
        notes=[
            "gateway and orders (as `make run` starts them, SQLite) start afresh for every sample; the "
            "load generator is a process of its own, over keep-alive connections",
            "traced = the stock SDK, always-on sampling; gateway and orders each export their spans "
            "(server spans from opentelemetry-instrumentation-fastapi, the gateway's client span from "
            "-httpx, orders' SQL from -sqlalchemy) and metrics over OTLP/HTTP to a trace sink process",
            "CPU = user+system time of gateway and orders (all threads, span export included) from the "
            f"first request to {SETTLE_SECONDS:.0f} s after the last, / every request answered",
        ],
        targets=[
            Target(
                "traced gateway hop throughput vs untraced",
                "requests_per_s",
                "traced",
                "untraced",
                0.75,
            ),
            # Steadier than throughput on a shared machine: another process's burst slows a
            # sample's requests, not the CPU each one takes.
            Target("traced CPU per request vs untraced", "cpu_us_per_request", "traced", "untraced"),
        ],
    )
    with workplace() as (amqp_url, tmp, endpoint):
        for round_number in range(rounds):
            order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                workdir = tmp / f"http-{round_number}-{variant}"
                with running(
                    workdir, amqp_url, traced=variant == "traced", otlp_endpoint=endpoint, services=SERVICES
                ) as stack:
                    auth = stack.auth_headers()
                    placed = httpx.post(
                        stack.url("gateway") + "/api/orders",
                        json=ORDER,
                        headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
                        timeout=10,
                    )
                    placed.raise_for_status()
                    url = f"{stack.url('gateway')}/api/orders/{placed.json()['order_id']}"
                    args = ["--url", url, "--concurrency", str(concurrency), "--seconds", str(seconds)]
                    for name, value in auth.items():
                        args += ["--header", f"{name}: {value}"]
                    cpu_before = _cpu_seconds(stack)
                    sample = run_worker("bench.http_load", args, python_env())
                    time.sleep(SETTLE_SECONDS)
                    cpu = _cpu_seconds(stack) - cpu_before
                sample["cpu_us_per_request"] = cpu / max(sample["sent"], 1) * 1e6
                if sample["errors"]:
                    result.notes.append(
                        f"{variant} round {round_number + 1}: {sample['errors']} non-200 answers"
                    )
                result.add(variant, sample)
                print(
                    f"  http round {round_number + 1}/{rounds} {variant:9s} "
                    + progress(
                        sample,
                        requests_per_s="req/s",
                        p50_ms="ms p50",
                        p99_ms="ms p99",
                        cpu_us_per_request="us/req",
                    ),
                    flush=True,
                )
    return result
