"""Benchmark 3, end to end: orders through the whole saga (gateway → orders → payments → bank →
orders → notifier), from POST to order.confirmed, at a fixed offered load, untraced and traced."""

from __future__ import annotations

from bench.infra import python_env, run_worker, workplace
from bench.platform import running
from bench.report import LATENCY_METRICS, Benchmark, Metric, Target, progress

VARIANTS = ("untraced", "traced")


def benchmark(rounds: int, rate: float, seconds: float) -> Benchmark:
    orders = round(rate * seconds)
    result = Benchmark(
        name="e2e",
        title=f"End to end: POST → order.confirmed, {rate:.0f} orders/s offered for {seconds:.0f} s",
        metrics=[Metric("orders_per_s", "completed", "orders/s", True), *LATENCY_METRICS],
        baseline="untraced",
        variants=list(VARIANTS),
        notes=[
            "the five services as `make run` starts them (SQLite, one database each), afresh each sample",
            "latency = from sending the POST to the order.confirmed event arriving on a queue the bench "
            "binds to lantern.events; completed/s = outcomes / (last outcome - first POST)",
            "traced = the stock SDK in every service, always-on sampling, spans and metrics over OTLP/HTTP "
            "to a trace sink process",
        ],
        targets=[
            Target("traced p50 vs untraced", "p50_ms", "traced", "untraced", 1.2, at_most=True),
            Target("traced p99 vs untraced", "p99_ms", "traced", "untraced", 1.3, at_most=True),
        ],
    )
    with workplace() as (amqp_url, tmp, endpoint):
        for round_number in range(rounds):
            order = VARIANTS if round_number % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                workdir = tmp / f"e2e-{round_number}-{variant}"
                with running(workdir, amqp_url, traced=variant == "traced", otlp_endpoint=endpoint) as stack:
                    sample = run_worker(
                        "bench.order_load", load_args(stack, amqp_url, rate, orders), python_env()
                    )
                if sample["completed"] < orders:
                    result.notes.append(
                        f"{variant} round {round_number + 1}: {sample['completed']} of {orders} orders "
                        f"completed, {sample['errors']} POSTs failed {sample.get('error_kinds', '')}"
                    )
                result.add(variant, sample)
                print(
                    f"  e2e round {round_number + 1}/{rounds} {variant:9s} "
                    + progress(sample, orders_per_s="orders/s", p50_ms="ms p50", p99_ms="ms p99"),
                    flush=True,
                )
    return result


def load_args(stack: object, amqp_url: str, rate: float, orders: int, in_flight: int = 0) -> list[str]:
    from devstack.stack import Stack

    assert isinstance(stack, Stack)
    token = stack.auth_headers()["Authorization"].removeprefix("Bearer ")
    return [
        "--gateway",
        stack.url("gateway"),
        "--amqp-url",
        amqp_url,
        "--token",
        token,
        "--rate",
        str(rate),
        "--orders",
        str(orders),
        "--in-flight",
        str(in_flight),
    ]
