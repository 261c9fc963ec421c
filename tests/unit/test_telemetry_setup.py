"""setup_telemetry reads only the standard OTEL_* variables. Each case runs in a fresh
interpreter, since OpenTelemetry's global providers can be set once per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib.metadata import version

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


UNREACHABLE = """
import logging, time
import httpx  # as in every service, by its UpstreamClient: the exporter's client, not part of the wait
began = time.monotonic()
from lantern_runtime.telemetry import setup_telemetry
from opentelemetry import trace
telemetry = setup_telemetry("orders")
print("set up in", round(time.monotonic() - began, 1))
with trace.get_tracer("t").start_as_current_span("work"):
    logging.getLogger("orders").warning("something to export")
began = time.monotonic()
telemetry.shutdown(timeout=2.0)
print("shut down in", round(time.monotonic() - began, 1))
"""


def test_a_collector_that_does_not_answer_blocks_neither_start_up_nor_the_exit() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # Port 9 (discard) on loopback: nothing listens, so every export is refused and retried.
    env = {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", UNREACHABLE], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    set_up, shut_down = (float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines())
    assert set_up < 1.0
    # The exporters would retry for OTEL_EXPORTER_OTLP_TIMEOUT (10 s) per batch.
    assert shut_down <= 2.5
    assert time.monotonic() - began < 8


RESOURCE = """
from opentelemetry import trace
from lantern_runtime.telemetry import setup_telemetry
setup_telemetry("orders")
attributes = trace.get_tracer_provider().resource.attributes
for key in ("service.namespace", "service.version", "deployment.environment.name", "telemetry.sdk.name"):
    print(key, attributes.get(key))
print("instance", len(str(attributes.get("service.instance.id", ""))))
"""


def resource(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANTERN_"))}
    result = subprocess.run(
        [sys.executable, "-c", RESOURCE], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def test_the_resource_names_namespace_version_instance_and_a_well_known_environment() -> None:
    assert resource() == {
        "service.namespace": "lantern",
        "service.version": version("lantern"),
        "deployment.environment.name": "development",
        "telemetry.sdk.name": "opentelemetry",
        # A UUID of its own per process.
        "instance": "36",
    }


def test_otel_resource_attributes_override_every_default_but_the_service_name() -> None:
    overridden = resource(
        LANTERN_ENVIRONMENT="staging",
        OTEL_RESOURCE_ATTRIBUTES="service.namespace=shop,service.version=9.9.9",
    )
    assert overridden["service.namespace"] == "shop"
    assert overridden["service.version"] == "9.9.9"
    assert overridden["deployment.environment.name"] == "staging"
    assert (
        resource(OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=production")[
            "deployment.environment.name"
        ]
        == "production"
    )


INSTRUMENTED = """
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from lantern_runtime.telemetry import setup_telemetry
setup_telemetry("orders")
setup_telemetry("orders")
for instrumentor in (HTTPXClientInstrumentor(), SQLAlchemyInstrumentor(), RedisInstrumentor()):
    print(type(instrumentor).__name__, instrumentor.is_instrumented_by_opentelemetry)
"""


def test_set_up_instruments_httpx_sqlalchemy_and_redis_with_the_stock_instrumentations() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANTERN_"))}
    result = subprocess.run(
        [sys.executable, "-c", INSTRUMENTED], env=clean, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "HTTPXClientInstrumentor True",
        "SQLAlchemyInstrumentor True",
        "RedisInstrumentor True",
    ]


def test_otel_traces_exporter_none_exports_nothing_and_another_exporter_is_refused() -> None:
    assert run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none").returncode == 0
    refused = run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_TRACES_EXPORTER="zipkin")
    assert refused.returncode != 0
    assert "OTEL_TRACES_EXPORTER='zipkin' is not supported; use 'otlp' or 'none'" in refused.stderr
