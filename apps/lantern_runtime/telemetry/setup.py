"""The OpenTelemetry SDK's tracer and meter providers, built from the standard OTEL_* variables as
the SDK's docs build them, and the stock instrumentations of every library Lantern talks through.

Under `opentelemetry-instrument` (zero-code) the distro has built the providers and instrumented
the libraries before any of this runs: Lantern then uses its providers, and each instrumentor,
being instrumented already, does nothing, so nothing is traced twice.

Logs are JSON lines on stdout with the trace and span ids (telemetry/logs.py), for the node's log
agent to collect. They are not exported over OTLP: the SDK's logs API is still a private module
(`opentelemetry.sdk._logs`), and Lantern uses public APIs only.
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
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lantern_runtime.telemetry.conventions import lantern_resource
from lantern_runtime.telemetry.libraries import instrument_libraries, use_stable_http_conventions
from lantern_runtime.telemetry.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor

logger = logging.getLogger(__name__)

# Health probes would otherwise produce a trace every few seconds per pod.
_EXCLUDED_PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass
class Telemetry:
    """What setup_telemetry built or found; shutdown() flushes and closes every exporter."""

    service_name: str
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    _shut_down: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and close the exporters, waiting at most `timeout` seconds.

        A collector that does not answer is retried by each exporter for up to
        OTEL_EXPORTER_OTLP_TIMEOUT per batch; that must not hold a stopping service past its
        grace period. Each provider shuts down in a daemon thread of its own, all at once, so the
        exit waits for none of them past `timeout`.
        """
        if self._shut_down:
            return
        self._shut_down = True
        providers: list[TracerProvider | MeterProvider] = [
            p for p in (self.tracer_provider, self.meter_provider) if p is not None
        ]
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


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "false").strip().lower() == "true"


def _exports(signal: str) -> bool:
    """Whether a signal goes out: an OTLP endpoint is set for it, and OTEL_<SIGNAL>_EXPORTER is
    not `none`. Without an endpoint a service started bare does not spend its time failing to
    reach localhost:4318."""
    exporter = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return False
    if exporter != "otlp":
        raise ValueError(f"OTEL_{signal}_EXPORTER={exporter!r} is not supported; use 'otlp' or 'none'")
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _transport(signal: str) -> str:
    protocol = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; "
            "use 'http/protobuf' (the default) or 'grpc'"
        )
    if protocol == "grpc" and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
        raise RuntimeError(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: pip install 'lantern[grpc]'"
        )
    return "grpc" if protocol == "grpc" else "http"


def _exporter(signal: str) -> Any:
    """The stock OTLP exporter of one signal for its protocol; it reads its own OTEL_EXPORTER_OTLP_*."""
    module, name = {
        "TRACES": ("trace_exporter", "OTLPSpanExporter"),
        "METRICS": ("metric_exporter", "OTLPMetricExporter"),
    }[signal]
    exporters = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{_transport(signal)}.{module}")
    return getattr(exporters, name)()


def _configured_providers() -> tuple[TracerProvider, MeterProvider | None] | None:
    """The SDK providers someone set globally before this (the distro of opentelemetry-instrument)."""
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, TracerProvider):
        return None
    meter_provider = metrics.get_meter_provider()
    return tracer_provider, meter_provider if isinstance(meter_provider, MeterProvider) else None


def setup_telemetry(
    service_name: str,
    *,
    log_level: str = "INFO",
    extra_span_processors: tuple[SpanProcessor, ...] = (),
) -> Telemetry:
    """Set up JSON logs, and unless OTEL_SDK_DISABLED=true, the SDK's traces and metrics, their
    OTLP export and the libraries' instrumentations."""
    configure_logging(service_name, log_level)
    if _sdk_disabled():
        logger.info("OpenTelemetry SDK disabled by OTEL_SDK_DISABLED")
        return Telemetry(service_name)
    configured = _configured_providers()
    if configured is not None:
        tracer_provider, meter_provider = configured
        logger.info(
            "using the OpenTelemetry providers already set in this process (e.g. by opentelemetry-instrument)"
        )
    else:
        resource = lantern_resource(service_name)
        # The provider reads OTEL_TRACES_SAMPLER(_ARG) and OTEL_*_LIMIT; BatchSpanProcessor OTEL_BSP_*;
        # the meter provider OTEL_METRICS_EXEMPLAR_FILTER; the reader OTEL_METRIC_EXPORT_*.
        tracer_provider = TracerProvider(resource=resource)
        if _exports("TRACES"):
            tracer_provider.add_span_processor(BatchSpanProcessor(_exporter("TRACES")))
        readers = [PeriodicExportingMetricReader(_exporter("METRICS"))] if _exports("METRICS") else []
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    for processor in extra_span_processors:
        tracer_provider.add_span_processor(processor)
    instrument_libraries(tracer_provider, meter_provider)
    # The W3C `traceresponse` header lets a client look up the trace of its own request.
    set_global_response_propagator(TraceResponsePropagator())
    return Telemetry(service_name, tracer_provider, meter_provider)


def instrument_app(app: FastAPI, telemetry: Telemetry) -> None:
    """Server spans and metrics from opentelemetry-instrumentation-fastapi, outside the app's own
    middleware and error handling (so its error responses are in the span). Its own variables
    configure it: OTEL_PYTHON_FASTAPI_EXCLUDED_URLS (by default the probes here) and
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST/_RESPONSE/_SANITIZE_FIELDS."""
    if not telemetry.enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    if FastAPIInstrumentor().is_instrumented_by_opentelemetry:
        # opentelemetry-instrument has instrumented every FastAPI app as it was made.
        return
    use_stable_http_conventions()
    configured = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    )
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        # Regular expressions searched in the whole URL. (Passed, not left to the variable: the
        # instrumentation reads that when first imported.)
        excluded_urls=configured or ",".join(f"{path}$" for path in _EXCLUDED_PATHS),
        # One span per ASGI message sent or received would triple the spans of every request
        # and tell the trace nothing it needs.
        exclude_spans=["receive", "send"],
    )
