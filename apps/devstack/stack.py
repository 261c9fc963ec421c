"""Starts the services (and a trace sink) as local processes, the same way for `make run` and
for the end-to-end tests.

Which services there are, their ports and which own a database come from the chart's
`components:` map (charts/lantern/values.yaml), the one list of services: a component added
there runs here too. A component's env values that name another component's Service
(`http://bank:8003`) are passed with that component's local address instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

from devstack.private import PRIVATE_UMASK, private_directory, private_log
from devstack.rabbitmq import broker_users_unavailable, service_users
from gateway.auth import issue_token

logger = logging.getLogger(__name__)

# The chart of the checkout this module belongs to; LANTERN_CHART names another.
CHART = Path(os.environ.get("LANTERN_CHART") or Path(__file__).resolve().parents[2] / "charts" / "lantern")
# Seconds a migration may wait for its database (a PostgreSQL still starting) and then take.
MIGRATION_TIMEOUT = 120.0


@dataclass(frozen=True)
class Component:
    """What the devstack needs of one of the chart's components."""

    name: str
    port: int
    # Owns a database, migrated to head before the service first starts.
    database: bool
    # Its env values that are another component's URL, e.g. BANK_URL -> ("bank", "http://bank:8003").
    urls: dict[str, str]
    # Talks to RabbitMQ (`amqp` in the chart), and the events it publishes (`amqp.publishes`).
    amqp: bool = False
    publishes: tuple[str, ...] = ()
    # Gets the key that verifies the gateway's signed subject (`trustsSubject`, as orders).
    trusts_subject: bool = False


def chart_components(chart: Path = CHART) -> dict[str, Component]:
    """The enabled components of `chart`'s values.yaml, in the order written there."""
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - the dev install has it
        raise ImportError("the devstack reads the chart's values with PyYAML: pip install pyyaml") from error

    values = yaml.safe_load((chart / "values.yaml").read_text())
    declared = values["components"]
    out = {}
    for name, component in declared.items():
        if not component.get("enabled", True):
            continue
        urls = {
            key: str(value)
            for key, value in (component.get("env") or {}).items()
            if urlsplit(str(value)).hostname in declared and urlsplit(str(value)).scheme in ("http", "https")
        }
        amqp = component.get("amqp") or False
        publishes = tuple(amqp.get("publishes") or ()) if isinstance(amqp, dict) else ()
        out[name] = Component(
            name,
            int(component["port"]),
            bool(component["database"]),
            urls,
            bool(amqp),
            publishes,
            trusts_subject=bool(component.get("trustsSubject")),
        )
    return out


COMPONENTS = chart_components()
SERVICES = tuple(COMPONENTS)
# Those with a database of their own, migrated to head before they first start.
WITH_DATABASE = tuple(name for name, component in COMPONENTS.items() if component.database)
DEFAULT_PORTS = {name: component.port for name, component in COMPONENTS.items()}


@dataclass
class Stack:
    workdir: Path
    # Another checkout's (a test's copy of the repository): pass its chart_components().
    components: dict[str, Component] = field(default_factory=lambda: dict(COMPONENTS))
    ports: dict[str, int] = field(default_factory=dict)
    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    # None: a local trace sink on sink_port receives the spans.
    otlp_endpoint: str | None = None
    sink_port: int = 4318
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # A command a service runs under, e.g. {"orders": ["opentelemetry-instrument"]}.
    launchers: dict[str, list[str]] = field(default_factory=dict)
    # The gateway checks tokens against this HS256 secret; auth_headers() signs with it.
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    # Signs the X-Lantern-Subject header the gateway sends to the services.
    subject_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    # Migrate each database before its service first starts; False when the caller has.
    migrate: bool = True
    # Where start() declares the topology, as the admin (default amqp_url); None: the caller has.
    topology_url: str | None = ""
    # Give each service with `amqp` a RabbitMQ user of its own with the chart's permissions
    # (when rabbitmqctl can make one, see start()); amqp_url stays the admin's.
    broker_users: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _migrated: set[str] = field(default_factory=set)
    _amqp_urls: dict[str, str] = field(default_factory=dict)
    _cleanup: ExitStack = field(default_factory=ExitStack)

    def __post_init__(self) -> None:
        self.ports = {name: c.port for name, c in self.components.items()} | self.ports

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.components)

    @property
    def spans_file(self) -> Path:
        return self.workdir / "spans.jsonl"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def _private_log_dir(self) -> None:
        """The workdir and its logs only their owner can read (devstack/private.py)."""
        private_directory(self.workdir)
        private_directory(self.log_dir)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def auth_headers(
        self,
        scopes: tuple[str, ...] = ("orders:write", "orders:read"),
        subject: str = "test-client",
        ttl: float = 3600.0,
    ) -> dict[str, str]:
        """An Authorization header the gateway of this stack accepts."""
        token = issue_token(self.jwt_secret, subject=subject, scopes=scopes, ttl=ttl)
        return {"Authorization": f"Bearer {token}"}

    def env_for(self, service: str) -> dict[str, str]:
        env = {
            **os.environ,
            "PORT": str(self.ports[service]),
            "HOST": "127.0.0.1",
            "AMQP_URL": self._amqp_urls.get(service, self.amqp_url),
            **self._local_urls(service),
            # One database per service, as in Kubernetes; e.g. ORDERS_DATABASE_URL points orders
            # at PostgreSQL for a local run.
            "DATABASE_URL": os.environ.get(
                f"{service.upper()}_DATABASE_URL", f"sqlite+aiosqlite:///{self.workdir / service}.db"
            ),
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint or f"http://127.0.0.1:{self.sink_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Local runs want to see a trace at once, not after the default 5 s batch delay.
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "OTEL_METRIC_EXPORT_INTERVAL": "10000",
            "PYTHONUNBUFFERED": "1",
            # As in the chart: only the gateway (it signs) and who relies on the subject hold it.
            **({"GATEWAY_SUBJECT_SECRET": self.subject_secret} if self._holds_subject_key(service) else {}),
            **({"GATEWAY_JWT_SECRET": self.jwt_secret} if service == "gateway" else {}),
            **self.extra_env,
            **self.service_env.get(service, {}),
        }
        env.pop("OTEL_SERVICE_NAME", None)
        return env

    def _holds_subject_key(self, service: str) -> bool:
        component = self.components.get(service)
        return service == "gateway" or (component is not None and component.trusts_subject)

    def _local_urls(self, service: str) -> dict[str, str]:
        """The service's env URLs naming other components, pointed at their local ports."""
        component = self.components.get(service)
        out = {}
        for key, value in (component.urls if component else {}).items():
            parts = urlsplit(value)
            callee = parts.hostname or ""
            if callee in self.ports:
                out[key] = parts._replace(netloc=f"127.0.0.1:{self.ports[callee]}", scheme="http").geturl()
        return out

    def start(self) -> None:
        self._private_log_dir()
        if self.otlp_endpoint is None:
            self._spawn(
                "tracesink",
                [
                    sys.executable,
                    "-m",
                    "devstack.tracesink",
                    "--port",
                    str(self.sink_port),
                    "--file",
                    str(self.spans_file),
                ],
                dict(os.environ),
            )
        self.migrate_databases(self.services)
        self.prepare_broker()
        for service in self.services:
            self.start_service(service)

    def prepare_broker(self) -> None:
        """What the chart's RabbitMQ and init containers give the services: the topology
        declared by the admin, and a user per service with its own permissions only."""
        amqp = {name: c.publishes for name, c in self.components.items() if c.amqp}
        if not amqp:
            return
        if self.topology_url is not None:
            self.declare_topology(self.topology_url or self.amqp_url, next(iter(amqp)))
        if not self.broker_users or self._amqp_urls:
            return
        unavailable = broker_users_unavailable(self.amqp_url)
        if unavailable:
            logger.warning(
                f"every service uses AMQP_URL's user, without per-service permissions: {unavailable}"
            )
            return
        self._amqp_urls = self._cleanup.enter_context(service_users(self.amqp_url, amqp))

    def declare_topology(self, admin_url: str, component: str) -> None:
        """Run the topology step the init containers run, with this checkout's topology."""
        env = {**self.env_for(component), "AMQP_URL": admin_url}
        self.start_process(
            "topology",
            [sys.executable, "-m", "lantern_runtime.messaging.declare", component, "--wait", "30"],
            env,
        )
        process = self.processes.pop("topology")
        try:
            returncode = process.wait(MIGRATION_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        if returncode != 0:
            raise RuntimeError(f"the topology step failed (exit {returncode}):\n{self.tail('topology')}")

    def start_service(self, service: str) -> None:
        self.migrate_databases((service,))
        command = [*self.launchers.get(service, []), sys.executable, "-m", service]
        self._spawn(service, command, self.env_for(service))

    def migrate_databases(self, services: tuple[str, ...]) -> None:
        """Migrate the databases of `services` not migrated yet to head, all at once, with the
        CLI the init containers run; each one's output goes to its service's log. Raises
        naming any that failed."""
        owners = {name for name, component in self.components.items() if component.database}
        pending = [s for s in services if s in owners and s not in self._migrated] if self.migrate else []
        if not pending:
            return
        self._private_log_dir()
        running = {}
        for service in pending:
            with private_log(self.log_dir / f"{service}.log") as log:
                running[service] = subprocess.Popen(
                    [sys.executable, "-m", "lantern_runtime.storage.migrate", service, "--wait", "30"],
                    env=self.env_for(service),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    umask=PRIVATE_UMASK,
                )
        failed = []
        for service, process in running.items():
            try:
                returncode = process.wait(MIGRATION_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
            if returncode == 0:
                self._migrated.add(service)
            else:
                failed.append(f"{service} (exit {returncode}):\n{self.tail(service)}")
        if failed:
            raise RuntimeError(f"database migration failed for {'; '.join(failed)}")

    def start_process(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self._private_log_dir()
        self._spawn(name, command, env)

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = private_log(self.log_dir / f"{name}.log")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # What the process creates in the workdir (databases, spans) is private too.
            umask=PRIVATE_UMASK,
        )

    @contextmanager
    def running(self, timeout: float = 60.0) -> Iterator[Stack]:
        """Started and ready for the block; stopped after it, however it ends."""
        self.start()
        try:
            self.wait_ready(timeout=timeout)
            yield self
        finally:
            self.stop()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every service answers /readyz; raise naming any that died or stalled."""
        deadline = time.monotonic() + timeout
        pending = set(self.services) & set(self.processes)
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for service in sorted(pending):
                    process = self.processes[service]
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"{service} exited with {process.returncode}; see "
                            f"{self.log_dir / (service + '.log')}:\n{self.tail(service)}"
                        )
                    try:
                        if client.get(self.url(service) + "/readyz").status_code == 200:
                            pending.discard(service)
                    except httpx.TransportError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"not ready after {timeout}s: {sorted(pending)}")
                time.sleep(0.2)

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM everything at once, so all drain together; the sink goes last, after the flushes."""
        services = [name for name in self.processes if name in self.components]
        for name in services:
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in services:
            process = self.processes[name]
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name in ("tracesink", "jaeger"):
            self.stop_service(name, timeout=5)
        for log in self._logs:
            log.close()
        # The run's broker users go once nothing uses them.
        self._cleanup.close()
        self._amqp_urls = {}


def development_secret(path: Path) -> str:
    """The secret kept at `path`, made on first use, so tokens stay valid across restarts; its
    directory (the workdir) private, the secret in it tightened if it was readable by others."""
    private_directory(path.parent)
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


def amqp_reachable(url: str, timeout: float = 3.0) -> str | None:
    """None when RabbitMQ accepts a connection at `url`; otherwise why not."""
    import aio_pika

    async def probe() -> None:
        connection = await aio_pika.connect(url, timeout=timeout)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def jaeger_binary() -> str | None:
    """Whether `make run` runs Jaeger rather than the trace sink (see jaeger_command)."""
    command = jaeger_command()
    return command[0] if command else None


def jaeger_command(chart: Path = CHART) -> list[str] | None:
    """How to run Jaeger locally: a `jaeger` binary on PATH, else its image in a Docker engine
    that has it already (nothing is pulled), else None: the trace sink stands in."""
    binary = shutil.which("jaeger")
    if binary:
        return [binary]
    image = local_jaeger_image(chart)
    if image is None:
        return None
    ports = [arg for port in (4317, 4318, 16686) for arg in ("--publish", f"127.0.0.1:{port}:{port}")]
    # Attached, so stopping `docker run` stops the container; --rm leaves nothing behind.
    return ["docker", "run", "--rm", "--name", f"lantern-jaeger-{os.getpid()}", *ports, image]


def local_jaeger_image(chart: Path = CHART) -> str | None:
    """The chart's Jaeger image if the local engine has it, else any jaegertracing/jaeger it has."""
    if shutil.which("docker") is None:
        return None
    try:
        listed = subprocess.run(
            ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "jaegertracing/jaeger"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    images = [line for line in listed.stdout.split() if not line.endswith(":<none>")]
    if not images:
        return None
    import yaml

    pinned = yaml.safe_load((chart / "values.yaml").read_text())["jaeger"]["image"]
    wanted = f"{pinned['repository']}:{pinned['tag']}"
    return wanted if wanted in images else images[0]
