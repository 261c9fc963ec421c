"""Services of the order flow as processes, the way `make run` starts them (devstack's Stack),
in a vhost of their own, with the gateway's rate limit out of the way."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from bench.infra import free_port, python_env
from devstack.stack import DEFAULT_PORTS, Stack

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# The bench's one client would otherwise be throttled at the default 20 requests/s.
UNLIMITED = "1000000"


@contextmanager
def running(
    workdir: Path,
    amqp_url: str,
    *,
    traced: bool,
    otlp_endpoint: str,
    services: tuple[str, ...] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Start the services (all five by default), with `env` added to each one's environment,
    wait until ready, stop them afterwards."""
    extra = {
        "GATEWAY_RATE_LIMIT": UNLIMITED,
        **({"OTEL_TRACES_SAMPLER": "always_on"} if traced else {"OTEL_SDK_DISABLED": "true"}),
        **(env or {}),
    }
    stack = Stack(
        workdir,
        ports={service: free_port() for service in DEFAULT_PORTS},
        amqp_url=amqp_url,
        otlp_endpoint=otlp_endpoint,
        extra_env=extra,
    )
    # Stack passes os.environ on; the project's paths and no stray OTEL_* of the caller's.
    stack.extra_env = {"PYTHONPATH": python_env()["PYTHONPATH"], **extra}
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        if services is None:
            stack.start()
        else:
            # The topology and the services' broker users, as start() makes them.
            stack.prepare_broker()
            for service in services:
                stack.start_service(service)
        stack.wait_ready(timeout=90)
        yield stack
    finally:
        stack.stop()
