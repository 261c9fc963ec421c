"""One call per service sets up OpenTelemetry traces, metrics and logs from the standard OTEL_* variables."""

from lantern_runtime.telemetry.logs import JsonLogFormatter
from lantern_runtime.telemetry.setup import Telemetry, instrument_app, setup_telemetry

__all__ = ["JsonLogFormatter", "Telemetry", "instrument_app", "setup_telemetry"]
