"""`--local`: the platform `make run` (python -m devstack) runs as processes on this machine.

It is found the way devstack places it: the services on their default ports, RabbitMQ at
AMQP_URL, the development secret in $LANTERN_DEV_DIR/jwt-secret (.lantern by default, or
GATEWAY_JWT_SECRET), and traces in Jaeger's query API on 16686 when devstack started a `jaeger`
binary, in the trace sink's on 4318 otherwise. LANTERN_LOCAL_PORTS (e.g.
`gateway=18080,sink=14318`) names other ports, as a stack started by a test has.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from devstack.stack import DEFAULT_PORTS, SERVICES, jaeger_binary
from lantern_cli.errors import Refused
from lantern_cli.targets import ComponentState, TokenKey

if TYPE_CHECKING:
    from collections.abc import Iterator

SINK_PORT = 4318
JAEGER_QUERY_PORT = 16686


def _ports_from_env() -> dict[str, int]:
    ports = {**DEFAULT_PORTS, "sink": SINK_PORT}
    for item in filter(None, os.environ.get("LANTERN_LOCAL_PORTS", "").split(",")):
        name, _, number = item.partition("=")
        if name.strip() not in ports or not number.strip().isdigit():
            raise Refused(
                f"LANTERN_LOCAL_PORTS: {item!r} is not NAME=PORT with NAME one of {', '.join(ports)}"
            )
        ports[name.strip()] = int(number)
    return ports


@dataclass
class LocalStack:
    workdir: Path = field(default_factory=lambda: Path(os.environ.get("LANTERN_DEV_DIR", ".lantern")))
    ports: dict[str, int] = field(default_factory=_ports_from_env)
    amqp_url: str = field(
        default_factory=lambda: os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    query_url: str | None = None

    def __post_init__(self) -> None:
        if self.query_url is None:
            # As devstack decides: its own Jaeger when one is on PATH and spans go nowhere else.
            jaeger = jaeger_binary() and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            port = JAEGER_QUERY_PORT if jaeger else self.ports["sink"]
            self.query_url = f"http://127.0.0.1:{port}"

    @property
    def description(self) -> str:
        return f"the local stack (make run; {self.workdir})"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def components(self) -> list[ComponentState]:
        states = []
        with httpx.Client(timeout=2.0) as http:
            for service in SERVICES:
                states.append(_probe(http, service, self.url(service)))
            states.append(_probe_query(http, str(self.query_url)))
        return states

    @contextlib.contextmanager
    def broker(self) -> Iterator[str]:
        yield self.amqp_url

    @contextlib.contextmanager
    def trace_query(self) -> Iterator[str]:
        assert self.query_url is not None
        yield self.query_url

    @contextlib.contextmanager
    def gateway(self) -> Iterator[str]:
        yield self.url("gateway")

    def token_key(self) -> TokenKey:
        if os.environ.get("GATEWAY_JWKS_URL"):
            raise Refused(
                "GATEWAY_JWKS_URL is set, so the gateway checks tokens from that identity provider; "
                "ask it for a token"
            )
        if secret := os.environ.get("GATEWAY_JWT_SECRET"):
            return TokenKey(secret)
        path = self.workdir / "jwt-secret"
        if not path.exists():
            raise Refused(f"no development secret at {path}: start the stack with `make run` first")
        return TokenKey(path.read_text().strip())


def _probe(http: httpx.Client, service: str, url: str) -> ComponentState:
    try:
        live = http.get(f"{url}/healthz").status_code == 200
        ready = http.get(f"{url}/readyz")
    except httpx.TransportError:
        return ComponentState(service, 1, 0, healthy=False, image="process", note=f"nothing answers at {url}")
    is_ready = ready.status_code == 200
    note = url if is_ready else f"{url}: /readyz answered {ready.status_code}"
    return ComponentState(
        service,
        1,
        int(is_ready),
        healthy=live and is_ready,
        image="process",
        note=note if live else "not live",
    )


def _probe_query(http: httpx.Client, url: str) -> ComponentState:
    """The trace sink, or devstack's Jaeger: up when its query API lists services."""
    try:
        answer = http.get(f"{url}/api/services")
    except httpx.TransportError:
        return ComponentState(
            "traces", 1, 0, healthy=False, image="process", note=f"nothing answers at {url}"
        )
    up = answer.status_code == 200
    note = f"query API {url}" if up else f"{url}/api/services answered {answer.status_code}"
    return ComponentState("traces", 1, int(up), healthy=up, image="process", note=note)
