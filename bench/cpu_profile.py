"""Where a consumer's CPU goes: one drain (by default the full path, traced) sampled by py-spy
from the moment it starts consuming, each sample put down to a stage of the work and to the
library it was spent in.

    python -m bench.cpu_profile [--variant lantern-full+traced] [--messages 5000] [--out DIR]

Stages follow the call stack from the outside in: the outbox relay (its SQL, and within it the
confirmed publish), the handler's transaction (and within it the inbox and the outbox write),
and the rest of consuming (FastStream's dispatch, decoding, acks). Libraries are the innermost
frame of a known package, so a call that an instrumentation wraps counts for the library that
does the work, and only what runs in OpenTelemetry's own code counts as tracing; the SDK's
export threads are tracing as a whole. Per-message figures are the sampled shares of the
process's own CPU per message in the same run (py-spy samples from outside, without stopping
the process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.drain import DONE_QUEUE, DRAIN_QUEUE, fill, purge
from bench.drain_worker import DRAINING, full_path
from bench.infra import fresh_database, python_env, workplace

RATE = 250  # samples per second

# The innermost frame whose path holds one of these names the library a sample was spent in.
LIBRARIES = (
    ("/opentelemetry/", "tracing (OpenTelemetry)"),
    ("/lantern_runtime/messaging/tracing.py", "tracing (OpenTelemetry)"),
    ("/lantern_runtime/telemetry/", "tracing (OpenTelemetry)"),
    ("/google/protobuf/", "tracing (OpenTelemetry)"),
    ("/faststream/opentelemetry/", "tracing (OpenTelemetry)"),
    ("/faststream/rabbit/opentelemetry/", "tracing (OpenTelemetry)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/aio_pika/", "aio-pika, aiormq, pamqp"),
    ("/aiormq/", "aio-pika, aiormq, pamqp"),
    ("/pamqp/", "aio-pika, aiormq, pamqp"),
    ("/fast_depends/", "FastStream"),
    ("/faststream/", "FastStream"),
    ("/pydantic", "pydantic"),
    ("/lantern_runtime/", "Lantern (runtime)"),
    ("/bench/", "the bench's handler"),
    ("/asyncio/", "asyncio"),
)

RELAY = "outbox relay: claim, mark sent, count"
PUBLISH = "confirmed publish (from the relay)"
TRANSACTION = "handler: its transaction, begin and commit"
INBOX = "handler: inbox"
OUTBOX = "handler: outbox write"
DISPATCH = "FastStream: dispatch, decode, middlewares, ack"
WIRE = "AMQP frames and sockets (deliveries, acks, confirms), event loop"
# SQLAlchemy runs a statement's synchronous part in a greenlet, whose stack does not show the
# coroutine that asked for it: the inbox's, the outbox's and the relay's statements alike.
GREENLET = "SQL in SQLAlchemy's greenlets (inbox, outbox and relay statements alike)"
EXPORT = "tracing: SDK export threads"
# (a function's file, its name or "" for any) -> the stage a sample in it belongs to.
STAGES = (
    (("/lantern_runtime/storage/outbox.py", "_run"), RELAY),
    (("/bench/drain_worker.py", "relay"), RELAY),
    (("/lantern_runtime/messaging/publisher.py", ""), PUBLISH),
    (("/faststream/rabbit/publisher/", ""), PUBLISH),
    (("/aio_pika/exchange.py", "publish"), PUBLISH),
    (("/bench/drain_worker.py", "on_tick_full"), TRANSACTION),
    (("/lantern_runtime/storage/inbox.py", ""), INBOX),
    (("/lantern_runtime/storage/outbox.py", "add_to_outbox"), OUTBOX),
)
# A stage found deeper in the stack takes over from these ones around it.
NESTED = {RELAY: {PUBLISH}, TRANSACTION: {INBOX, OUTBOX}}
# Samples in the event loop's wait for the sockets: the process was idle, not spending CPU.
IDLE = ("/selectors.py", "select")


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, file) of each frame of a py-spy raw line's stack, outermost first."""
    frames = []
    for frame in stack.split(";"):
        name, _, where = frame.rpartition(" (")
        frames.append((name, where.rpartition(":")[0]))
    return frames


def library(frames: list[tuple[str, str]]) -> str:
    for _name, path in reversed(frames):
        for marker, label in LIBRARIES:
            if marker in path:
                return label
    return "other (stdlib, interpreter)"


# What made the tracing work a sample was in, outermost first.
ORIGINS = (
    (
        "/opentelemetry/instrumentation/sqlalchemy/",
        "SQLAlchemy instrumentation: statement and connect spans",
    ),
    (
        "/lantern_runtime/messaging/tracing.py",
        "Lantern's messaging middleware: spans, metrics",
    ),
    ("/faststream/opentelemetry/", "FastStream's RabbitTelemetryMiddleware: spans, metrics"),
    ("/opentelemetry/sdk/metrics/", "metrics recorded elsewhere"),
)


def tracing_origin(frames: list[tuple[str, str]]) -> str | None:
    """Where a sample of tracing work came from; None if it is not tracing."""
    if stage(frames) == EXPORT:
        return "SDK export threads: batching, OTLP encoding, HTTP"
    if not library(frames).startswith("tracing"):
        return None
    for marker, label in ORIGINS:
        if any(marker in path for _name, path in frames):
            return label
    return "other (context, propagation, span API)"


def stage(frames: list[tuple[str, str]]) -> str:
    roots = {path for _name, path in frames[:3]}
    if any("/threading.py" in path for path in roots) and any("/opentelemetry/" in p for _n, p in frames):
        return EXPORT
    in_loop = any("runpy" in path or "/bench/" in path for path in roots)
    if not in_loop and any("/sqlalchemy/" in path for _name, path in frames):
        return GREENLET
    found = ""
    for name, path in frames:
        for (file, function), label in STAGES:
            here = file in path and (not function or name.endswith(function))
            if here and (not found or label in NESTED.get(found, ())):
                found = label
    if found:
        return found
    return DISPATCH if any("/faststream/" in path for _name, path in frames) else WIRE


Counts = Counter[tuple[str, str, str]]
COLUMNS = ("stage", "library", "tracing by origin")


def analyse(raw: Path) -> tuple[Counts, int]:
    """Samples by (stage, library, tracing origin or ""), and their total; idle ones left out."""
    counts: Counts = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = _frames(stack)
        if frames[-1][0].endswith(IDLE[1]) and IDLE[0] in frames[-1][1]:
            continue
        counts[stage(frames), library(frames), tracing_origin(frames) or ""] += int(count)
    return counts, sum(counts.values())


def table(counts: Counts, total: int, us_per_msg: float, by: int) -> list[str]:
    """One row per stage, library or tracing origin (`by`, an index of COLUMNS): CPU per message,
    share, and of it tracing's."""
    rows: Counter[str] = Counter()
    tracing: Counter[str] = Counter()
    for key, n in counts.items():
        if not key[by]:
            continue
        rows[key[by]] += n
        if key[2]:
            tracing[key[by]] += n
    lines = [f"| {COLUMNS[by]} | us/msg | share | of it tracing, us/msg |", "|---|---:|---:|---:|"]
    for name, n in rows.most_common():
        cost, traced = us_per_msg * n / total, us_per_msg * tracing[name] / total
        lines.append(f"| {name} | {cost:,.0f} | {n / total:.0%} | {traced:,.0f} |")
    return lines


def report(name: str, raw: Path, us_per_msg: float) -> str:
    counts, total = analyse(raw)
    tracing = sum(n for key, n in counts.items() if key[2])
    parts = [f"## {name}: {us_per_msg:,.0f} us CPU per message, {total:,} samples at {RATE}/s"]
    parts += ["\n".join(table(counts, total, us_per_msg, by)) for by in range(3) if by < 2 or tracing]
    parts.append(f"tracing in all: {us_per_msg * tracing / total:,.0f} us/msg ({tracing / total:.0%})")
    return "\n\n".join(parts) + "\n"


def profile(variant: str, messages: int, out: Path) -> dict[str, float]:
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed (it is in the dev dependencies)")
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{variant}.txt"
    with workplace() as (amqp_url, workdir, endpoint), fresh_database(workdir) as database_url:
        asyncio.run(fill(amqp_url, DRAIN_QUEUE, messages))
        args = [variant, "--amqp-url", amqp_url, "--queue", DRAIN_QUEUE, "--count", str(messages)]
        if full_path(variant):
            args += ["--database-url", database_url]
        env = python_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        worker = subprocess.Popen(  # noqa: S603 - the suite's own worker
            [sys.executable, "-m", "bench.drain_worker", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stderr is not None
        for line in worker.stderr:
            if line.strip() == DRAINING:
                break
        # From the start of consuming to the process's exit; py-spy reads it without pausing it.
        record = ["record", "--pid", str(worker.pid), "--rate", str(RATE), "--nonblocking"]
        spy = subprocess.Popen(  # noqa: S603 - py-spy from the project's venv
            [py_spy, *record, "--format", "raw", "--full-filenames", "--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stdout, _ = worker.communicate(timeout=600)
        spy.wait(60)
        asyncio.run(purge(amqp_url, DRAIN_QUEUE, DONE_QUEUE.name))
    result: dict[str, float] = json.loads(stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", action="append", help="default: lantern-full+traced and aio-pika-full")
    parser.add_argument("--messages", type=int, default=5_000)
    # py-spy's raw stacks, for flamegraph.pl or speedscope; not results to keep in the repository.
    default_out = Path(tempfile.gettempdir()) / "lantern-bench-profile"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument(
        "--analyse", nargs=2, metavar=("RAW", "US_PER_MSG"), help="split stacks recorded before, no new run"
    )
    args = parser.parse_args(argv)
    if args.analyse:
        raw, us = args.analyse
        print(report(Path(raw).stem, Path(raw), float(us)))
        return 0
    for variant in args.variant or ["lantern-full+traced", "aio-pika-full"]:
        sample = profile(variant, args.messages, args.out)
        print(report(variant, args.out / f"{variant}.txt", sample["cpu_us_per_msg"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
