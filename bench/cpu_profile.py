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

# Stages, outermost first: (a function's file, its name or "" for any), the stage they start.
STAGES = (
    (("/lantern_runtime/storage/outbox.py", "_run"), "outbox relay: claim, mark sent, count"),
    (("/lantern_runtime/messaging/publisher.py", ""), "confirmed publish"),
    (("/bench/drain_worker.py", "on_tick_full"), "handler: transaction begin/commit"),
    (("/bench/drain_worker.py", "relay"), "outbox relay: claim, mark sent, count"),
    (("/lantern_runtime/storage/inbox.py", ""), "handler: inbox"),
    (("/lantern_runtime/storage/outbox.py", "add_to_outbox"), "handler: outbox write"),
)
# Stages that take over from the one around them: a publish within the relay is the publish.
NESTED = {
    "outbox relay: claim, mark sent, count": {"confirmed publish"},
    "handler: transaction begin/commit": {"handler: inbox", "handler: outbox write"},
}
EXPORT = "tracing: SDK export threads"
REST = "consuming: FastStream dispatch, decode, ack"


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


def stage(frames: list[tuple[str, str]]) -> str:
    if any("/threading.py" in path for _name, path in frames[:3]) and any(
        "/opentelemetry/" in path for _name, path in frames
    ):
        return EXPORT
    found = REST
    for name, path in frames:
        for (file, function), label in STAGES:
            here = file in path and (not function or name.endswith(function))
            if here and (found == REST or label in NESTED.get(found, ())):
                found = label
    return found


def analyse(raw: Path) -> tuple[Counter[tuple[str, str]], int]:
    """Samples by (stage, library), and their total."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = _frames(stack)
        counts[stage(frames), library(frames)] += int(count)
    return counts, sum(counts.values())


def table(counts: Counter[tuple[str, str]], total: int, us_per_msg: float, by: int) -> list[str]:
    rows: Counter[str] = Counter()
    for key, n in counts.items():
        rows[key[by]] += n
    lines = [f"| {'stage' if by == 0 else 'library'} | us/msg | share |", "|---|---:|---:|"]
    for name, n in rows.most_common():
        lines.append(f"| {name} | {us_per_msg * n / total:,.0f} | {n / total:.0%} |")
    return lines


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
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile", description=__doc__)
    parser.add_argument("--variant", action="append", help="default: lantern-full+traced and aio-pika-full")
    parser.add_argument("--messages", type=int, default=5_000)
    # py-spy's raw stacks, for flamegraph.pl or speedscope; not results to keep in the repository.
    default_out = Path(tempfile.gettempdir()) / "lantern-bench-profile"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    for variant in args.variant or ["lantern-full+traced", "aio-pika-full"]:
        sample = profile(variant, args.messages, args.out)
        us = sample["cpu_us_per_msg"]
        counts, total = analyse(args.out / f"{variant}.txt")
        print(f"## {variant}: {us:,.0f} us CPU per message, {total:,} samples at {RATE}/s\n")
        print("\n".join(table(counts, total, us, 0)) + "\n")
        print("\n".join(table(counts, total, us, 1)) + "\n")
        tracing = sum(n for (s, lib), n in counts.items() if s == EXPORT or lib.startswith("tracing"))
        print(f"tracing in all: {us * tracing / total:,.0f} us/msg ({tracing / total:.0%})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
