"""A closed-loop HTTP/1.1 load generator in a process of its own: `--concurrency` keep-alive
connections, each sending the same GET as soon as the previous answer is in.

    python -m bench.http_load --url URL --header 'Name: value' --concurrency 16 --seconds 10

Hand-written over asyncio streams rather than an HTTP client library, so that the generator
takes as little of the machine's CPU as it can from the services it measures. Prints one JSON
line: requests/s, p50/p99 latency (ms), the number of non-200 answers, and every answer received
warm-up included (`sent`), which the services' CPU time is divided by.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


async def _connection(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    warm_until: float,
    latencies: list[float],
    errors: list[int],
    sent: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (started := time.perf_counter()) < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            sent[0] += 1
            if started >= warm_until:
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors.append(int(head[9:12]))
    finally:
        writer.close()


async def run(
    url: str, headers: list[str], concurrency: int, seconds: float, warmup: float
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {host}:{port}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    latencies: list[float] = []
    errors: list[int] = []
    sent = [0]
    start = time.perf_counter()
    warm_until = start + warmup
    stop_at = warm_until + seconds
    await asyncio.gather(
        *(
            _connection(host, port, request, stop_at, warm_until, latencies, errors, sent)
            for _ in range(concurrency)
        )
    )
    latencies.sort()
    count = len(latencies)
    return {
        "requests": count,
        "requests_per_s": count / seconds,
        "p50_ms": latencies[count // 2] * 1000 if count else 0.0,
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else 0.0,
        "errors": len(errors),
        "sent": sent[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.header, args.concurrency, args.seconds, args.warmup))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
