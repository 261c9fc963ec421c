"""What every benchmark needs around it: a RabbitMQ vhost of its own, free ports, a trace sink,
and a way to run one variant in a fresh process and read back its numbers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost as devstack_fresh_vhost

if TYPE_CHECKING:
    from collections.abc import Iterator

POSTGRES_URL = os.environ.get("LANTERN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent


def fresh_vhost() -> AbstractContextManager[str]:
    """A RabbitMQ vhost for one benchmark, deleted afterwards; yields its AMQP URL."""
    return devstack_fresh_vhost("lantern-bench")


@contextmanager
def fresh_database(fallback: Path) -> Iterator[str]:
    """A new PostgreSQL database (an asyncpg SQLAlchemy URL), dropped afterwards; a SQLite file
    under `fallback` when PostgreSQL is not reachable at LANTERN_BENCH_POSTGRES."""
    import asyncpg

    name = f"lantern_bench_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError):
        yield f"sqlite+aiosqlite:///{fallback / (name + '.db')}"
        return
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark process: the project's apps on the path, no inherited OTEL_*."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    # LANTERN_BENCH_APPS points the processes at another checkout's apps/, e.g. to measure
    # the runtime before a change against the same suite.
    apps = os.environ.get("LANTERN_BENCH_APPS", str(ROOT / "apps"))
    env["PYTHONPATH"] = os.pathsep.join([apps, str(ROOT)])
    env.update(extra)
    return env


@contextmanager
def trace_sink(workdir: Path) -> Iterator[str]:
    """The benchmarks' OTLP/HTTP receiver (bench.sink) as a process of its own; yields its endpoint.
    Export requests land in `workdir/traces.otlp`."""
    port = free_port()
    log = (workdir / "tracesink.log").open("ab")
    process = subprocess.Popen(  # noqa: S603 - the project's own trace sink
        [
            sys.executable,
            "-m",
            "bench.sink",
            "--port",
            str(port),
            "--file",
            str(workdir / "traces.otlp"),
        ],
        env=python_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(endpoint + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the trace sink did not start; see {workdir / 'tracesink.log'}")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@contextmanager
def workplace() -> Iterator[tuple[str, Path, str]]:
    """A vhost, a scratch directory and a trace sink for one benchmark: (AMQP URL, dir, OTLP endpoint)."""
    with (
        fresh_vhost() as amqp_url,
        tempfile.TemporaryDirectory(prefix="lantern-bench-") as tmp,
        trace_sink(Path(tmp)) as endpoint,
    ):
        yield amqp_url, Path(tmp), endpoint


def run_worker(module: str, args: list[str], env: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    """Run `python -m module args` and return the JSON object it prints last on stdout."""
    done = subprocess.run(  # noqa: S603 - one of the suite's own worker modules
        [sys.executable, "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed with exit code {done.returncode}:\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result
