"""setup_telemetry reads only the standard OTEL_* variables. Each case runs in a fresh
interpreter, since OpenTelemetry's global providers can be set once per process."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
from lantern_runtime.telemetry import setup_telemetry
from opentelemetry import trace
telemetry = setup_telemetry("orders")
print("enabled", telemetry.enabled)
if telemetry.enabled:
    print("service", trace.get_tracer_provider().resource.attributes["service.name"])
    print("region", trace.get_tracer_provider().resource.attributes.get("region"))
    print("sampler", type(trace.get_tracer_provider().sampler).__name__)
telemetry.shutdown()
"""


def run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_the_service_name_is_the_services_own_and_resource_attributes_are_merged() -> None:
    result = run(OTEL_SERVICE_NAME="something-else", OTEL_RESOURCE_ATTRIBUTES="region=eu-west")
    assert result.returncode == 0, result.stderr
    assert "service orders" in result.stdout
    assert "region eu-west" in result.stdout


def test_the_sampler_comes_from_otel_traces_sampler() -> None:
    result = run(OTEL_TRACES_SAMPLER="always_off")
    assert "sampler StaticSampler" in result.stdout


def test_otel_sdk_disabled_turns_tracing_off() -> None:
    result = run(OTEL_SDK_DISABLED="true")
    assert "enabled False" in result.stdout


def test_an_unsupported_protocol_is_refused_naming_the_supported_ones() -> None:
    result = run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_PROTOCOL="http/json")
    assert result.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in result.stderr
    assert "'http/protobuf'" in result.stderr


def test_grpc_without_its_exporter_installed_says_what_to_install() -> None:
    result = run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert result.returncode != 0
    assert "pip install 'lantern[grpc]'" in result.stderr
