"""`python -m bench [consumer|http|e2e|memory|soak|all] [--rounds N] [--quick]`

Each variant runs in a process of its own; variants alternate within every round (A B C, then
C B A), and the tables show medians over the rounds and ratios against a baseline measured in
the same run. Tables go to stdout, everything to bench/results/latest.json (and a timestamped
copy). `--quick` shrinks every benchmark to check that the suite works, not to measure.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass

from bench import drain, http_hop, memory, saga, soak
from bench.report import Benchmark, write_results

SUITES = ("consumer", "http", "e2e", "memory", "soak")


@dataclass(frozen=True)
class Sizes:
    messages: int
    http_seconds: float
    e2e_rate: float
    e2e_seconds: float
    memory_checkpoints: tuple[int, ...]
    # Seconds of steady load, and of it the first ones left out of the fits.
    soak_seconds: float
    soak_warmup: float


# 25 orders/s: below what the five services complete on two cores (about 30-45/s), so the
# latencies are the flow's own, not a queue's.
# The soak: seven minutes, 42 retry-budget windows, at soak.RATE; orders' heap settles in the
# first 200 s or so (about 4,000 orders), so the last third (300-420 s) is past it.
FULL = Sizes(12_000, 10.0, 25.0, 20.0, (2_000, 5_000, 10_000), 420.0, 60.0)
QUICK = Sizes(3_000, 4.0, 20.0, 5.0, (200, 500, 1_000), 40.0, 10.0)


# Rounds of a full run. The consumer's are the shortest and its CPU target the closest call, so
# it gets the most; e2e's samples are the longest.
ROUNDS = {"consumer": 5, "http": 3, "e2e": 2}
QUICK_ROUNDS = 2


def run(suite: str, rounds: int, sizes: Sizes) -> Benchmark:
    if suite == "consumer":
        return drain.benchmark(rounds, sizes.messages)
    if suite == "http":
        return http_hop.benchmark(rounds, sizes.http_seconds)
    if suite == "e2e":
        return saga.benchmark(rounds, sizes.e2e_rate, sizes.e2e_seconds)
    if suite == "soak":
        return soak.benchmark(soak.RATE, sizes.soak_seconds, sizes.soak_warmup)
    return memory.benchmark(sizes.memory_checkpoints)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", nargs="?", default="all", choices=(*SUITES, "all"))
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per benchmark (default: consumer 5, http 3, e2e 2; --quick 2); memory and soak run once",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the suite")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    suites = SUITES if args.suite == "all" else (args.suite,)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)

    results = []
    began = time.monotonic()
    for suite in suites:
        started = time.monotonic()
        print(f"# {suite}", flush=True)
        rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS.get(suite, 1))
        results.append(run(suite, rounds, sizes))
        print(f"  ({time.monotonic() - started:.0f} s)\n", flush=True)
    print(f"$ {command}    # {time.monotonic() - began:.0f} s\n")
    for result in results:
        print(result.table() + "\n")
    print(f"results: {write_results(results, command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
