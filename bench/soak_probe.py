"""What grows inside a soaked service: an env-gated probe the bench injects, never the services.

`python -m bench.soak_probe run --services orders,payments --seconds 300` starts the stack as the
soak does, with a `sitecustomize` of the bench's own on each probed service's path. In a probed
process it starts `tracemalloc` (LANTERN_SOAK_PROBE_FRAMES frames) at interpreter start-up, and
a thread records every few seconds what the process holds, by who holds it:

- rss: the resident set (/proc/self/statm);
- blocks, gc_objects: Python's allocated blocks and the collector's tracked objects;
- traced: what Python's allocators hand out (tracemalloc), and tracemalloc's own bookkeeping;
- sqlite: what SQLite's allocator holds (sqlite3_memory_used: page caches, statements, schema);
- malloc: glibc's view (mallinfo2: bytes in use, free in arenas, mmapped).

It also dumps a tracemalloc snapshot at the given times. `python -m bench.soak_probe diff DIR`
compares the first and last snapshot of each service, grouped by traceback, and prints the
component series. Bench code only: without LANTERN_SOAK_PROBE set, importing it does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

ENV = "LANTERN_SOAK_PROBE"  # the directory the probe writes to
FRAMES = "LANTERN_SOAK_PROBE_FRAMES"
TRACE_FROM = "LANTERN_SOAK_PROBE_TRACE_FROM"  # seconds after start-up
SNAPSHOTS = "LANTERN_SOAK_PROBE_SNAPSHOTS"  # seconds after start-up, comma-separated
INTERVAL = 5.0
DEFAULT_OUT = str(Path(tempfile.gettempdir()) / "lantern-soak-probe")

SITECUSTOMIZE = "from bench import soak_probe\nsoak_probe.install()\n"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def _libc() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    return libc


def _sqlite() -> Any:
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return None
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return lib


def _rss() -> int:
    pages = Path("/proc/self/statm").read_text().split()[1]
    return int(pages) * os.sysconf("SC_PAGE_SIZE")


def _sqlite_caches(sqlite: Any) -> list[int]:
    """Page-cache bytes of every open sqlite3 connection (SQLITE_DBSTATUS_CACHE_USED), which
    sqlite3_db_status reports whether or not SQLite's global memory statistics are on."""
    if sqlite is None:
        return []
    used = []
    for obj in gc.get_objects():
        if type(obj) is sqlite3.Connection:
            # The C struct behind sqlite3.Connection: PyObject_HEAD, then the sqlite3* handle.
            db = ctypes.c_void_p.from_address(id(obj) + object.__basicsize__).value
            if not db:
                continue
            current, high = ctypes.c_int(), ctypes.c_int()
            status = sqlite.sqlite3_db_status(
                ctypes.c_void_p(db), 1, ctypes.byref(current), ctypes.byref(high), 0
            )
            if status == 0:
                used.append(current.value)
    return used


def sample(libc: Any, sqlite: Any) -> dict[str, Any]:
    info = libc.mallinfo2()
    caches = _sqlite_caches(sqlite)
    traced, _peak = tracemalloc.get_traced_memory()
    return {
        "rss": _rss(),
        # Python objects alive, cheaply and without tracemalloc: what a leak of objects grows.
        "blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
        "traced": traced,
        "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
        "sqlite": sqlite.sqlite3_memory_used() if sqlite is not None else 0,
        "sqlite_page_caches": caches,
        "malloc_in_use": info.uordblks + info.hblkhd,
        "malloc_free": info.fordblks,
        "malloc_arena": info.arena,
        "malloc_mmapped": info.hblkhd,
    }


def install() -> None:
    """Start tracemalloc and the sampling thread, if this process is one the bench probes."""
    out = os.environ.get(ENV)
    if not out:
        return
    started = time.monotonic()
    # Tracing from start-up makes imports crawl; growth is what is allocated once the load runs.
    trace_from = float(os.environ.get(TRACE_FROM, "0"))
    frames = int(os.environ.get(FRAMES, "10"))
    if trace_from <= 0:
        tracemalloc.start(frames)
    snapshots = sorted(float(s) for s in os.environ.get(SNAPSHOTS, "").split(",") if s)
    # The pid too: the stack's migration step runs with the same environment before the service.
    name = f"{os.environ.get('LANTERN_SOAK_PROBE_NAME', 'process')}-{os.getpid()}"
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)

    def run() -> None:
        libc, sqlite = _libc(), _sqlite()
        with (directory / f"{name}.jsonl").open("a") as log:
            while True:
                time.sleep(INTERVAL)
                now = time.monotonic() - started
                if not tracemalloc.is_tracing() and now >= trace_from:
                    tracemalloc.start(frames)
                row = {"t": round(now, 1), **sample(libc, sqlite)}
                if snapshots and now >= snapshots[0] and tracemalloc.is_tracing():
                    snapshots.pop(0)
                    path = directory / f"{name}-{now:06.0f}.snap"
                    tracemalloc.take_snapshot().dump(str(path))
                    row["snapshot"] = path.name
                log.write(json.dumps(row) + "\n")
                log.flush()

    threading.Thread(target=run, name="soak-probe", daemon=True).start()


def _run(args: argparse.Namespace) -> None:
    from bench.infra import workplace
    from bench.platform import running
    from bench.soak import SERVICES, SOAK_ENV, analyse, databases, soak
    from devstack.stack import Stack

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    site = out / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    probed = args.services.split(",")
    original = Stack.env_for

    def env_for(self: Stack, service: str) -> dict[str, str]:
        env = original(self, service)
        if service in probed and service in SERVICES:
            env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
            env[ENV] = str(out)
            env[FRAMES] = str(args.frames)
            env[SNAPSHOTS] = args.snapshots
            env[TRACE_FROM] = str(args.trace_from)
            env["LANTERN_SOAK_PROBE_NAME"] = service
        return env

    Stack.env_for = env_for  # type: ignore[method-assign]
    with (
        workplace() as (amqp_url, tmp, endpoint),
        databases(args.database, tmp),
        running(tmp / "probe", amqp_url, traced=True, otlp_endpoint=endpoint, env=SOAK_ENV) as stack,
    ):
        time.sleep(5)
        series, summary = soak(stack, amqp_url, args.rate, args.seconds)
        for service in SERVICES:
            db = tmp / "probe" / f"{service}.db"
            with contextlib.suppress(OSError):
                print(f"{service}.db {db.stat().st_size / 2**20:.1f} MB", flush=True)
    (out / "series.json").write_text(json.dumps(vars(series)))
    for service, figures in analyse(series, args.warmup).items():
        print(service, " ".join(f"{key} {value:.2f}" for key, value in figures.items()))
    print(json.dumps(summary))


def _diff(args: argparse.Namespace) -> None:
    out = Path(args.out)
    logs: dict[str, Path] = {}
    for log in sorted(out.glob("*.jsonl"), key=lambda p: p.stat().st_size):
        logs[log.stem.rsplit("-", 1)[0]] = log  # the longest-lived process of each service
    for log in logs.values():
        name = log.stem
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        print(f"\n== {name}: MB at t (rss, traced, tracemalloc's own, sqlite caches, malloc in use and free)")
        for row in rows[:: max(1, len(rows) // 12)] + rows[-1:]:
            print(
                f"  {row['t']:6.0f} s  rss {row['rss'] / 2**20:6.1f}  traced {row['traced'] / 2**20:6.1f}  "
                f"tm {row['tracemalloc_overhead'] / 2**20:5.1f}  "
                f"sqlite caches {len(row.get('sqlite_page_caches', []))}x "
                f"{sum(row.get('sqlite_page_caches', [])) / 2**20:5.1f}  "
                f"malloc {row['malloc_in_use'] / 2**20:6.1f}  free {row['malloc_free'] / 2**20:5.1f}  "
                f"blocks {row.get('blocks', 0):8d}  objects {row.get('gc_objects', 0):7d}"
            )
        snaps = sorted(out.glob(f"{name}-*.snap"))
        if len(snaps) < 2:
            continue
        first, last = (tracemalloc.Snapshot.load(str(p)) for p in (snaps[args.base], snaps[-1]))
        noise = tracemalloc.Filter(False, tracemalloc.__file__)
        first, last = first.filter_traces([noise]), last.filter_traces([noise])
        stats = last.compare_to(first, "traceback")
        total = sum(s.size_diff for s in stats)
        print(f"  {snaps[args.base].name} -> {snaps[-1].name}: {total / 2**20:+.2f} MB traced")
        for stat in stats[: args.top]:
            print(
                f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks",
                f"(now {stat.size / 1024:.0f} KiB)",
            )
            for line in stat.traceback.format(limit=args.frames)[-2 * args.frames :]:
                print("      " + line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_probe")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--out", default=DEFAULT_OUT)
    run.add_argument("--services", default="orders,payments,notifier")
    run.add_argument("--rate", type=float, default=20.0)
    run.add_argument("--seconds", type=float, default=300.0)
    run.add_argument("--frames", type=int, default=25)
    run.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    run.add_argument("--warmup", type=float, default=60.0)
    # A time past the run's end samples RSS, SQLite and malloc without tracemalloc's cost.
    run.add_argument("--trace-from", type=float, default=60.0)
    run.add_argument("--snapshots", default="120,240,360")
    diff = sub.add_parser("diff")
    diff.add_argument("--out", default=DEFAULT_OUT)
    diff.add_argument("--top", type=int, default=15)
    diff.add_argument("--frames", type=int, default=8)
    diff.add_argument("--base", type=int, default=0)
    args = parser.parse_args(argv)
    (_run if args.command == "run" else _diff)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
