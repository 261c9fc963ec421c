"""A local OTLP/HTTP receiver that keeps spans in a JSON-lines file, for `make traces` and tests.

It accepts protobuf and JSON on /v1/traces, and takes (and drops) metrics and logs so that
services exporting all three signals see no errors. It also answers the part of Jaeger's HTTP
query API that `lantern trace`, `lantern smoke` and the helm-test smoke read, in Jaeger's JSON:

    GET /api/traces/{id}                                    one trace (404 when unknown)
    GET /api/traces?service=S[&tags={"k":"v"}][&limit=N][&lookback=1h][&start=µs][&end=µs]
                                                            the latest traces with a span of S
                                                            carrying every tag
    GET /api/services                                       the services that sent spans
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from lantern_runtime.jaeger_query import lookback_seconds
from lantern_runtime.trace_contract import INTERNAL, Span
from lantern_runtime.trace_formats import spans_from_otlp_json, spans_from_otlp_proto

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


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

    def stored() -> dict[str, list[Span]]:
        # Under the writers' lock, so a line being appended is never read half-written.
        with lock:
            return traces_by_id(spans_file)

    @app.get("/api/services")
    def services() -> JSONResponse:
        names = sorted({span.service for spans in stored().values() for span in spans})
        return _answer(names)

    @app.get("/api/traces/{trace_id}")
    def trace(trace_id: str) -> JSONResponse:
        spans = stored().get(trace_id.lower().rjust(32, "0"))
        if not spans:
            return _answer(None, status=404, error="trace not found")
        return _answer([jaeger_trace(spans)])

    @app.get("/api/traces")
    def find(
        service: str = "",
        tags: str = "{}",
        limit: int = 20,
        lookback: str = "",
        start: int = 0,
        end: int = 0,
        operation: str = "",
    ) -> JSONResponse:
        if not service:
            return _answer(None, status=400, error="parameter 'service' is required")
        try:
            wanted = {str(key): str(value) for key, value in json.loads(tags).items()}
            # start and end are µs since the epoch, as Jaeger's API takes them.
            since = max(
                start * 1000, time.time_ns() - lookback_seconds(lookback) * 1_000_000_000 if lookback else 0
            )
            until = end * 1000 if end else None
        except (ValueError, AttributeError) as error:
            return _answer(None, status=400, error=f"bad tags or lookback: {error}")
        found = [
            spans
            for spans in stored().values()
            if since <= min(span.start_ns for span in spans)
            and (until is None or min(span.start_ns for span in spans) <= until)
            and any(_matches(span, service, operation, wanted) for span in spans)
        ]
        found.sort(key=lambda spans: min(span.start_ns for span in spans), reverse=True)
        return _answer([jaeger_trace(spans) for spans in found[: max(limit, 0) or None]])

    return app


def _answer(data: object, *, status: int = 200, error: str | None = None) -> JSONResponse:
    """Jaeger's envelope: data, total, limit, offset, errors."""
    total = len(data) if isinstance(data, list) else 0
    errors = [{"code": status, "msg": error}] if error else None
    return JSONResponse(
        {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}, status_code=status
    )


def _matches(span: Span, service: str, operation: str, tags: dict[str, str]) -> bool:
    if span.service != service or (operation and span.name != operation):
        return False
    return all(_tag_text(span.attributes.get(key)) == value for key, value in tags.items())


def _tag_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _jaeger_tag(key: str, value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    text = value if isinstance(value, str) else json.dumps(value)
    return {"key": key, "type": "string", "value": text}


def jaeger_trace(spans: Iterable[Span]) -> dict[str, object]:
    """One trace as Jaeger's query API gives it: spans with references, tags and a process each."""
    spans = sorted(spans, key=lambda span: span.start_ns)
    processes: dict[str, str] = {}
    for span in spans:
        processes.setdefault(span.service, f"p{len(processes) + 1}")
    trace_id = spans[0].trace_id
    out = []
    for span in spans:
        tags = [_jaeger_tag(key, value) for key, value in span.attributes.items()]
        if span.kind != INTERNAL:
            tags.append(_jaeger_tag("span.kind", span.kind))
        if span.error:
            tags += [_jaeger_tag("error", True), _jaeger_tag("otel.status_code", "ERROR")]
        references = (
            [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id}]
            if span.parent_span_id
            else []
        )
        out.append(
            {
                "traceID": trace_id,
                "spanID": span.span_id,
                "operationName": span.name,
                "references": references,
                "startTime": span.start_ns // 1000,
                "duration": max(0, span.end_ns - span.start_ns) // 1000,
                "tags": tags,
                "logs": [],
                "processID": processes[span.service],
                "warnings": None,
            }
        )
    return {
        "traceID": trace_id,
        "spans": out,
        "processes": {pid: {"serviceName": service, "tags": []} for service, pid in processes.items()},
        "warnings": None,
    }


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
