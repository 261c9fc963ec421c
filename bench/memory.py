"""Benchmark 4, memory: the resident set of each service idle, then after 2k, 5k and 10k orders
through the saga (traced, as deployed), to show growth and whether it levels off."""

from __future__ import annotations

import time

import psutil

from bench.infra import python_env, run_worker, workplace
from bench.platform import running
from bench.report import Benchmark, Metric
from bench.saga import load_args
from devstack.stack import SERVICES

# A service is flagged when its last stretch grew by more than this many MB per 1,000 orders.
STILL_GROWING_MB_PER_1K = 1.0


def _rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


# Orders unfinished at a time while memory is measured: the platform runs flat out, no backlog.
IN_FLIGHT = 20


def benchmark(checkpoints: tuple[int, ...]) -> Benchmark:
    labels = ["idle"] + [f"{n // 1000}k" if n % 1000 == 0 else str(n) for n in checkpoints]
    result = Benchmark(
        name="memory",
        title=f"Memory: RSS of each service, idle and after {', '.join(labels[1:])} orders",
        metrics=[Metric(label, label, "MB", False) for label in labels]
        + [Metric("growth", "growth", "MB", False), Metric("last_per_1k", "last stretch", "MB/1k", False)],
        baseline="",
        variants=list(SERVICES),
        notes=[
            f"traced (always-on, OTLP/HTTP to a trace sink), SQLite; orders sent closed-loop, {IN_FLIGHT} "
            "unfinished at a time; RSS read with psutil after each batch has completed",
            f"a service whose last stretch grows by more than {STILL_GROWING_MB_PER_1K} MB per 1,000 orders "
            "is called out as not levelling off",
        ],
    )
    with (
        workplace() as (amqp_url, tmp, endpoint),
        running(tmp / "memory", amqp_url, traced=True, otlp_endpoint=endpoint) as stack,
    ):
        pids = {service: stack.processes[service].pid for service in SERVICES}
        time.sleep(5)
        readings = {service: {"idle": _rss_mb(pid)} for service, pid in pids.items()}
        done = 0
        for checkpoint, label in zip(checkpoints, labels[1:], strict=True):
            sample = run_worker(
                "bench.order_load", load_args(stack, amqp_url, 0, checkpoint - done, IN_FLIGHT), python_env()
            )
            done = checkpoint
            time.sleep(2)
            for service, pid in pids.items():
                readings[service][label] = _rss_mb(pid)
            print(
                f"  memory after {checkpoint} orders ({sample['completed']} completed): "
                + ", ".join(f"{s} {readings[s][label]:.0f} MB" for s in SERVICES),
                flush=True,
            )
    last_orders = (checkpoints[-1] - (checkpoints[-2] if len(checkpoints) > 1 else 0)) / 1000
    for service in SERVICES:
        reading = readings[service]
        reading["growth"] = reading[labels[-1]] - reading["idle"]
        reading["last_per_1k"] = (reading[labels[-1]] - reading[labels[-2]]) / last_orders
        result.add(service, reading)
        if reading["last_per_1k"] > STILL_GROWING_MB_PER_1K:
            result.notes.append(
                f"{service} has not levelled off: +{reading['last_per_1k']:.1f} MB per 1,000 orders "
                f"between {labels[-2]} and {labels[-1]}"
            )
    return result
