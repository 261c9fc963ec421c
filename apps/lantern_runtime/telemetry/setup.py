"""Builds the tracer, meter and logger providers from OTEL_* variables and installs instrumentation."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.propagators import (
    TraceResponsePropagator,
    set_global_response_propagator,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lantern_runtime.telemetry.logs import configure_logging
from lantern_runtime.telemetry.server import ServerSpans

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor
    from starlette.types import ASGIApp

logger = logging.getLogger(__name__)

# Health probes would otherwise produce a trace every few seconds per pod.
_EXCLUDED_PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass
class Telemetry:
    """What setup_telemetry built; shutdown() flushes and closes every exporter."""

    service_name: str
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    _shut_down: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and close the exporters, waiting at most `timeout` seconds.

        A collector that does not answer is retried by each exporter for up to
        OTEL_EXPORTER_OTLP_TIMEOUT (10 s) per batch; that must not hold a stopping service past
        its grace period. Each provider shuts down in a daemon thread of its own, all at once, so
        the exit waits for none of them past `timeout`; the SDK's exit hooks then find every
        provider already shutting down, and return at once.
        """
        if self._shut_down:
            return
        self._shut_down = True
        providers = [p for p in (self.tracer_provider, self.meter_provider, self.logger_provider) if p]
        flushes = [
            threading.Thread(target=p.shutdown, name="telemetry-shutdown", daemon=True) for p in providers
        ]
        deadline = time.monotonic() + timeout
        for flush in flushes:
            flush.start()
        for flush in flushes:
            flush.join(max(0.0, deadline - time.monotonic()))
        if any(flush.is_alive() for flush in flushes):
            logger.warning("telemetry not flushed within %g s; the collector does not answer", timeout)


class _HashedOnceResource(Resource):
    """A Resource that computes its hash once. The OTLP encoder groups every exported span by
    its resource, and Resource.__hash__ serialises all the attributes to JSON on each call."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other)


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "false").strip().lower() == "true"


def _export_configured(signal: str) -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _protocol(signal: str) -> str:
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _uses_grpc(signal: str) -> bool:
    protocol = _protocol(signal)
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; "
            "use 'http/protobuf' (the default) or 'grpc'"
        )
    if protocol == "grpc" and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
        raise RuntimeError(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: pip install 'lantern[grpc]'"
        )
    return protocol == "grpc"


def _exporter(signal: str, name: str) -> Any:
    """An OTLP exporter of one signal for its configured protocol, e.g. ("TRACES", "trace_exporter")."""
    transport = "grpc" if _uses_grpc(signal) else "http"
    module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{transport}.{name}")
    class_name = {"trace_exporter": "OTLPSpanExporter", "metric_exporter": "OTLPMetricExporter"}
    return getattr(module, class_name.get(name, "OTLPLogExporter"))()


def _span_exporter() -> Any:
    if _uses_grpc("TRACES"):
        return _exporter("TRACES", "trace_exporter")
    # Imported here: it imports the HTTP exporter, which a gRPC-only install may lack.
    from lantern_runtime.telemetry.otlp import LeanOTLPSpanExporter

    return LeanOTLPSpanExporter()


def setup_telemetry(
    service_name: str,
    *,
    log_level: str = "INFO",
    extra_span_processors: tuple[SpanProcessor, ...] = (),
) -> Telemetry:
    """Set up JSON logs, and unless OTEL_SDK_DISABLED=true, traces, metrics and OTLP export.

    Exporters are configured only when an OTLP endpoint is set, so a service started
    bare does not spend its time failing to reach localhost:4318.
    """
    configure_logging(service_name, log_level)
    telemetry = Telemetry(service_name)
    if _sdk_disabled():
        logger.info("OpenTelemetry SDK disabled by OTEL_SDK_DISABLED")
        return telemetry

    # OTEL_RESOURCE_ATTRIBUTES are merged in; service.name is always this service's own.
    resource = _HashedOnceResource(Resource.create({SERVICE_NAME: service_name}))
    # TracerProvider reads OTEL_TRACES_SAMPLER(_ARG); BatchSpanProcessor reads OTEL_BSP_*.
    tracer_provider = TracerProvider(resource=resource)
    for processor in extra_span_processors:
        tracer_provider.add_span_processor(processor)

    metric_readers = []
    logger_provider = None
    if _export_configured("TRACES"):
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
    if _export_configured("METRICS"):
        metric_readers.append(PeriodicExportingMetricReader(_exporter("METRICS", "metric_exporter")))
    if _export_configured("LOGS"):
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(_exporter("LOGS", "_log_exporter")))
        logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))

    meter_provider = MeterProvider(resource=resource, metric_readers=metric_readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    # The W3C `traceresponse` header lets a client look up the trace of its own request.
    set_global_response_propagator(TraceResponsePropagator())  # type: ignore[no-untyped-call]

    telemetry.tracer_provider = tracer_provider
    telemetry.meter_provider = meter_provider
    telemetry.logger_provider = logger_provider
    return telemetry


def instrument_app(app: FastAPI, telemetry: Telemetry) -> None:
    """A server span for every request but the probes, outside the app's own middleware (so its
    error responses are in the span) and inside any wrapped around it by `service_app`."""
    if not telemetry.enabled:
        return
    tracer_provider = telemetry.tracer_provider
    assert tracer_provider is not None
    meter_provider = telemetry.meter_provider or metrics.get_meter_provider()
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return ServerSpans(
            build(),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            excluded_paths=_EXCLUDED_PATHS,
        )

    setattr(app, "build_middleware_stack", build_middleware_stack)  # noqa: B010 - mypy forbids assigning a method
