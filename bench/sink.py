"""The benchmarks' OTLP/HTTP receiver: it stores each export request's body as it came and
answers 200, so that on a two-core machine the sink takes as little CPU as it can from the
processes being measured. The devstack's sink decodes every span as it arrives, which at
thousands of spans a second takes most of a core.

    python -m bench.sink --port PORT --file PATH

`count_spans(PATH)` decodes what was stored, after the timed part of a benchmark, to check
that the spans were really exported.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_LENGTH = struct.Struct("<I")
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, traces: Path) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, headers = head.partition(b"\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if request_line.split(b" ")[1].startswith(b"/v1/traces"):
                with traces.open("ab") as out:
                    out.write(_LENGTH.pack(len(body)) + body)
            writer.write(_OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def count_spans(traces: Path) -> int:
    """The number of spans in every export request stored in `traces`."""
    if not traces.exists():
        return 0
    data = traces.read_bytes()
    count, offset = 0, 0
    while offset < len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        request = ExportTraceServiceRequest.FromString(data[offset : offset + length])
        offset += length
        count += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
    return count


async def main_async(port: int, traces: Path) -> None:
    server = await asyncio.start_server(lambda r, w: _serve(r, w, traces), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sink")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main_async(args.port, args.file))


if __name__ == "__main__":
    main()
