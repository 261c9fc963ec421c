"""A local OTLP/HTTP receiver that keeps spans in a JSON-lines file, for `make traces` and tests.

It accepts protobuf and JSON on /v1/traces, and takes (and drops) metrics and logs so that
services exporting all three signals see no errors.
"""

from __future__ import annotations

import argparse
import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI, Request, Response
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from lantern_runtime.trace_contract import Span
from lantern_runtime.trace_formats import spans_from_otlp_json, spans_from_otlp_proto

if TYPE_CHECKING:
    from collections.abc import Iterator


def sink_app(spans_file: Path) -> FastAPI:
    app = FastAPI(title="lantern trace sink")
    lock = threading.Lock()

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        body = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                spans = spans_from_otlp_json(json.loads(body))
            else:
                spans = spans_from_otlp_proto(ExportTraceServiceRequest.FromString(body))
        except (DecodeError, ValueError, KeyError) as error:
            return Response(f"not an OTLP trace export: {error}", status_code=400)
        lines = "".join(json.dumps(asdict(span)) + "\n" for span in spans)
        with lock, spans_file.open("a") as out:
            out.write(lines)
        return Response(status_code=200, media_type=request.headers.get("content-type"))

    @app.post("/v1/metrics")
    @app.post("/v1/logs")
    async def accepted() -> Response:
        return Response(status_code=200)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def read_spans(spans_file: Path) -> Iterator[Span]:
    if not spans_file.exists():
        return
    with spans_file.open() as lines:
        for line in lines:
            if line.strip():
                yield Span(**json.loads(line))


def traces_by_id(spans_file: Path) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = {}
    for span in read_spans(spans_file):
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 inside a container")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args()
    args.file.parent.mkdir(parents=True, exist_ok=True)
    uvicorn.run(sink_app(args.file), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
