"""Builds the tracer and meter providers from OTEL_* variables and installs instrumentation.

Logs are JSON lines on stdout with the trace and span ids (telemetry/logs.py), for the node's log
agent to collect. They are not exported over OTLP: the SDK's logs API is still a private module
(`opentelemetry.sdk._logs`) in 1.45, and Lantern uses public APIs only.
"""

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
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lantern_runtime.telemetry.logs import configure_logging
from lantern_runtime.telemetry.server import ServerSpans
from lantern_runtime.telemetry.tracer import SdkTracing, lean_tracer, set_global_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from lantern_runtime.app import ServiceApp

logger = logging.getLogger(__name__)

# Health probes would otherwise produce a trace every few seconds per pod.
_EXCLUDED_PATHS = ("/healthz", "/readyz", "/metrics")
# Who makes the HTTP server spans: LANTERN_HTTP_INSTRUMENTATION.
HTTP_INSTRUMENTATIONS = ("lantern", "opentelemetry")


@dataclass
class Telemetry:
    """What setup_telemetry built; shutdown() flushes and closes every exporter."""

    service_name: str
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    # The provider with the parts it was built from, when setup_telemetry built it: Lantern's
    # own spans are lean spans then (telemetry/tracer.py), the SDK's otherwise.
    tracing: SdkTracing | None = None
    http_instrumentation: str = "lantern"
    _shut_down: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.tracing is not None and self.tracer_provider is None:
            self.tracer_provider = self.tracing.provider
        if self.http_instrumentation not in HTTP_INSTRUMENTATIONS:
            raise ValueError(
                f"LANTERN_HTTP_INSTRUMENTATION={self.http_instrumentation!r} is not one of "
                f"{', '.join(HTTP_INSTRUMENTATIONS)}: 'lantern' (Lantern's own server spans, the default) "
                "or 'opentelemetry' (opentelemetry-instrumentation-fastapi)"
            )

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
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p]
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
        self._lantern_hash = super().__hash__()

    def __hash__(self) -> int:
        return self._lantern_hash

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


def _sdk_exporter_needed() -> bool:
    """What only the SDK's OTLP/HTTP span exporter does: a credential provider's session, and
    its own metrics."""
    return bool(
        os.environ.get("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER")
        or os.environ.get("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER")
        or _sdk_internal_metrics()
    )


def _sdk_internal_metrics() -> bool:
    return os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true"


def _span_exporter() -> SpanExporter:
    if _uses_grpc("TRACES") or _sdk_exporter_needed():
        exporter: SpanExporter = _exporter("TRACES", "trace_exporter")
        return exporter
    # Imported here: the gRPC-only path does not need it.
    from lantern_runtime.telemetry.otlp import LeanOTLPSpanExporter

    return LeanOTLPSpanExporter()


def _http_instrumentation() -> str:
    return os.environ.get("LANTERN_HTTP_INSTRUMENTATION", "").strip().lower() or "lantern"


def setup_telemetry(
    service_name: str,
    *,
    log_level: str = "INFO",
    extra_span_processors: tuple[SpanProcessor, ...] = (),
) -> Telemetry:
    """Set up JSON logs, and unless OTEL_SDK_DISABLED=true, traces, metrics and their OTLP export.

    Exporters are configured only when an OTLP endpoint is set, so a service started
    bare does not spend its time failing to reach localhost:4318.
    """
    configure_logging(service_name, log_level)
    telemetry = Telemetry(service_name, http_instrumentation=_http_instrumentation())
    if _sdk_disabled():
        logger.info("OpenTelemetry SDK disabled by OTEL_SDK_DISABLED")
        set_global_tracing(None)
        return telemetry

    # OTEL_RESOURCE_ATTRIBUTES are merged in; service.name is always this service's own.
    resource = _HashedOnceResource(Resource.create({SERVICE_NAME: service_name}))
    # The provider reads OTEL_TRACES_SAMPLER(_ARG) and OTEL_*_LIMIT; BatchSpanProcessor OTEL_BSP_*.
    tracing = SdkTracing.build(resource=resource)
    tracer_provider = tracing.provider
    for processor in extra_span_processors:
        tracer_provider.add_span_processor(processor)

    metric_readers = []
    if _export_configured("TRACES"):
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
    if _export_configured("METRICS"):
        metric_readers.append(PeriodicExportingMetricReader(_exporter("METRICS", "metric_exporter")))

    meter_provider = MeterProvider(resource=resource, metric_readers=metric_readers)
    # The SDK's spans count themselves only in its own tracer: with its internal metrics on,
    # every span is the SDK's.
    if _sdk_internal_metrics():
        trace.set_tracer_provider(tracer_provider)
    else:
        set_global_tracing(tracing)
    metrics.set_meter_provider(meter_provider)
    # The W3C `traceresponse` header lets a client look up the trace of its own request.
    set_global_response_propagator(TraceResponsePropagator())  # type: ignore[no-untyped-call]

    telemetry.tracer_provider = tracer_provider
    telemetry.tracing = None if _sdk_internal_metrics() else tracing
    telemetry.meter_provider = meter_provider
    return telemetry


def instrument_app(app: ServiceApp, telemetry: Telemetry) -> None:
    """A server span for every request but the probes, outside the app's own middleware and
    error handling (so its error responses are in the span) and inside anything `service_app`
    wraps around it: Lantern's own (the default), or opentelemetry-instrumentation-fastapi's
    with LANTERN_HTTP_INSTRUMENTATION=opentelemetry."""
    if not telemetry.enabled:
        return
    tracer_provider = telemetry.tracer_provider
    assert tracer_provider is not None
    meter_provider = telemetry.meter_provider or metrics.get_meter_provider()
    if telemetry.http_instrumentation == "opentelemetry":
        _instrument_with_opentelemetry(app, tracer_provider, meter_provider)
        return
    tracer = lean_tracer(telemetry.tracing or tracer_provider, ServerSpans.SCOPE)
    app.wrap_outside(
        lambda inner: ServerSpans(
            inner, tracer=tracer, meter_provider=meter_provider, excluded_paths=_EXCLUDED_PATHS
        )
    )


def _instrument_with_opentelemetry(
    app: ServiceApp, tracer_provider: TracerProvider, meter_provider: metrics.MeterProvider
) -> None:
    """The stock FastAPI instrumentation, configured by its own variables:
    OTEL_PYTHON_FASTAPI_EXCLUDED_URLS (by default the probes here),
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST/_RESPONSE/_SANITIZE_FIELDS, and
    OTEL_SEMCONV_STABILITY_OPT_IN (`http` here unless set: the stable attributes, as Lantern's)."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    configured = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    )
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        # Regular expressions searched in the whole URL. (Passed, not left to the variable: the
        # instrumentation reads that when first imported.)
        excluded_urls=configured or ",".join(f"{path}$" for path in _EXCLUDED_PATHS),
        # One span per ASGI message sent or received would triple the spans of every request
        # and tell the trace nothing it needs.
        exclude_spans=["receive", "send"],
    )
