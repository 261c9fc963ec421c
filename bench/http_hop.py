"""Benchmark 2, the HTTP hop: gateway → orders, `GET /api/orders/{id}` of an existing order, at a
fixed concurrency, untraced (OTEL_SDK_DISABLED=true) against traced (always-on, OTLP/HTTP)."""

from __future__ import annotations

import uuid

import httpx

from bench.infra import python_env, run_worker, workplace
from bench.platform import running
from bench.report import LATENCY_METRICS, Benchmark, Metric, Target, progress

VARIANTS = ("untraced", "traced")
ORDER = {"customer_id": "c-bench", "items": [{"sku": "lamp", "quantity": 2, "unit_price": "19.90"}]}


def benchmark(rounds: int, seconds: float, concurrency: int = 16) -> Benchmark:
    result = Benchmark(
        name="http",
        title=f"HTTP hop, gateway -> orders GET /api/orders/{{id}}, {concurrency} conns, {seconds:.0f}s",
        metrics=[Metric("requests_per_s", "throughput", "req/s", True), *LATENCY_METRICS],
        baseline="untraced",
        variants=list(VARIANTS),
        notes=[
            "gateway and orders (as `make run` starts them, SQLite) start afresh for every sample; the "
            "load generator is a process of its own, over keep-alive connections",
            "traced = always-on sampling; gateway and orders each export their server and client spans "
            "over OTLP/HTTP to a trace sink process",
        ],
        targets=[
            Target("traced gateway hop throughput vs untraced", "requests_per_s", "traced", "untraced", 0.75)
        ],
    )
    with workplace() as (amqp_url, tmp, endpoint):
        for round_number in range(rounds):
            order = VARIANTS if round_number % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                workdir = tmp / f"http-{round_number}-{variant}"
                with running(
                    workdir,
                    amqp_url,
                    traced=variant == "traced",
                    otlp_endpoint=endpoint,
                    services=("orders", "gateway"),
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
                    sample = run_worker("bench.http_load", args, python_env())
                if sample["errors"]:
                    result.notes.append(
                        f"{variant} round {round_number + 1}: {sample['errors']} non-200 answers"
                    )
                result.add(variant, sample)
                print(
                    f"  http round {round_number + 1}/{rounds} {variant:9s} "
                    + progress(sample, requests_per_s="req/s", p50_ms="ms p50", p99_ms="ms p99"),
                    flush=True,
                )
    return result
