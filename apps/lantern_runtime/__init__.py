"""Lantern's shared runtime: settings, telemetry, messaging, HTTP client, health and the trace contract."""

from lantern_runtime.settings import BrokerSettings, ServiceSettings

__all__ = ["BrokerSettings", "ServiceSettings"]
