"""`lantern` against a Kubernetes API server double: an HTTP server on 127.0.0.1 that serves the
API's JSON for a Lantern release (Deployments, a StatefulSet, Pods with containerStatuses,
Services, Secrets, ConfigMaps), checks the bearer token, and refuses the port-forward upgrade
or, for the pods a test names, speaks the WebSocket port-forward protocol to a real port (the
live RabbitMQ, a trace sink); reached through a kubeconfig as kubectl would read it. No live
cluster is involved."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import httpx
import jwt
import pytest

from devstack.loopback import free_port, serving
from devstack.tracesink import sink_app
from lantern_cli.__main__ import main as lantern
from order_flow.topology import ORDER_FLOW

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NS = "lantern"
TOKEN = "double-token"
JWT_SECRET = "kind-generated-jwt-secret-of-48-characters-xxxxx"
CREATED = "2026-12-01T10:00:00Z"


def labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "lantern",
        "app.kubernetes.io/instance": "lantern",
        "app.kubernetes.io/component": component,
    }


def metadata(name: str, component: str, kind_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "resourceVersion": "1",
        "creationTimestamp": CREATED,
        "labels": {**labels(component), "app.kubernetes.io/managed-by": "Helm", **(kind_labels or {})},
    }


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def workload(
    kind: str, component: str, image: str, replicas: int, ready: int, port: tuple[str, int], **container: Any
) -> dict[str, Any]:
    api = "apps/v1"
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": labels(component)},
        "template": {
            "metadata": {"labels": labels(component)},
            "spec": {
                "containers": [
                    {
                        "name": component,
                        "image": image,
                        "ports": [{"name": port[0], "containerPort": port[1], "protocol": "TCP"}],
                        **container,
                    }
                ]
            },
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = f"{component}-headless"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": metadata(component, component),
        "spec": spec,
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": 1,
        },
    }


def pod(
    name: str,
    component: str,
    image: str,
    port: tuple[str, int],
    *,
    ready: bool = True,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
    waiting: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"waiting": {"reason": waiting, "message": "back-off 5m0s restarting failed container"}}
        if waiting
        else {"running": {"startedAt": CREATED}}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(name, component, {"pod-template-hash": "7d9f"}),
        "spec": {
            "containers": [
                {"name": component, "image": image, "ports": [{"name": port[0], "containerPort": port[1]}]}
            ]
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": component,
                    "image": image,
                    "imageID": f"docker.io/library/{image}@sha256:{'0' * 64}",
                    "ready": ready,
                    "started": ready,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": {"terminated": last} if last else {},
                }
            ],
        },
    }


def terminated(reason: str, exit_code: int, finished: str) -> dict[str, Any]:
    return {"reason": reason, "exitCode": exit_code, "startedAt": CREATED, "finishedAt": finished}


def service(name: str, port: int, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, name),
        "spec": {"selector": labels(name), "ports": [{"name": target, "port": port, "targetPort": target}]},
    }


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {
        key.replace("_", "-"): base64.b64encode(value.encode()).decode() for key, value in data.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, "gateway"),
        "type": "Opaque",
        "data": encoded,
    }


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name, "gateway"), "data": data}


SERVICE_PORTS = {"gateway": ("http", 8080), "orders": ("http", 8001), "payments": ("http", 8002)}
SERVICE_PORTS |= {"bank": ("http", 8003), "notifier": ("http", 8004), "jaeger": ("ui", 16686)}


def healthy_release() -> dict[str, dict[str, dict[str, Any]]]:
    """The objects of a kind install of charts/lantern, as the API serves them, all healthy."""
    amqp = secret_env("AMQP_URL", "rabbitmq-credentials", "url")
    objects: dict[str, dict[str, dict[str, Any]]] = {
        kind: {} for kind in ("deployments", "statefulsets", "pods", "services", "secrets", "configmaps")
    }
    for component, port in SERVICE_PORTS.items():
        image = "jaegertracing/jaeger:2.21.0" if component == "jaeger" else f"lantern-{component}:0.1.0"
        env = [amqp] if component in ("orders", "payments", "notifier") else []
        extra: dict[str, Any] = {"env": env}
        if component == "gateway":
            extra = {
                "envFrom": [{"configMapRef": {"name": "gateway-config"}}],
                "env": [
                    secret_env("GATEWAY_SUBJECT_SECRET", "gateway-auth", "subject-secret"),
                    secret_env("GATEWAY_JWT_SECRET", "gateway-auth", "jwt-secret"),
                ],
            }
        objects["deployments"][component] = workload("Deployment", component, image, 1, 1, port, **extra)
        objects["pods"][f"{component}-7d9f-abcde"] = pod(f"{component}-7d9f-abcde", component, image, port)
    rabbit = ("amqp", 5672)
    objects["statefulsets"]["rabbitmq"] = workload(
        "StatefulSet", "rabbitmq", "rabbitmq:4.2.6-management", 1, 1, rabbit
    )
    objects["pods"]["rabbitmq-0"] = pod("rabbitmq-0", "rabbitmq", "rabbitmq:4.2.6-management", rabbit)
    for name, port, target in (
        ("rabbitmq", 5672, "amqp"),
        ("jaeger", 16686, "ui"),
        ("gateway", 8080, "http"),
    ):
        objects["services"][name] = service(name, port, target)
    objects["secrets"]["gateway-auth"] = secret(
        "gateway-auth", jwt_secret=JWT_SECRET, subject_secret="s" * 48
    )
    objects["secrets"]["rabbitmq-credentials"] = secret(
        "rabbitmq-credentials", username="lantern", password="pw", url="amqp://lantern:pw@rabbitmq:5672/"
    )
    objects["configmaps"]["gateway-config"] = config_map(
        "gateway-config", {"HOST": "0.0.0.0", "PORT": "8080", "ORDERS_URL": "http://orders:8001"}
    )
    return objects


class ApiServerDouble(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.objects = healthy_release()
        self.upgrades: list[str] = []
        # Pods whose port-forward this API server accepts, and where their port really is;
        # any other port-forward upgrade is refused, as RBAC without pods/portforward would.
        self.forward_to: dict[str, tuple[str, int]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: ApiServerDouble

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        self._send(code, {**body, "message": message, "reason": reason, "code": code})

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._status(401, "Unauthorized", "Unauthorized")
            return
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = parse_qs(url.query)
        # /api/v1/namespaces/NS/KIND[/NAME[/SUB]] or /apis/apps/v1/namespaces/NS/KIND
        parts = parts[3:] if parts[0] == "apis" else parts[2:]
        if len(parts) < 3 or parts[0] != "namespaces":
            self._status(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            return
        namespace, kind, rest = parts[1], parts[2], parts[3:]
        if rest[1:] == ["portforward"]:
            self.server.upgrades.append(f"{kind}/{rest[0]}?{url.query} upgrade={self.headers.get('Upgrade')}")
            if rest[0] in self.server.forward_to:
                self._port_forward(int(query["ports"][0]), self.server.forward_to[rest[0]])
                return
            self._status(
                403, "Forbidden", f'pods "{rest[0]}" is forbidden: cannot create resource "pods/portforward"'
            )
            return
        stored = self.server.objects.get(kind, {}) if namespace == NS else {}
        if rest:
            if rest[0] in stored:
                self._send(200, stored[rest[0]])
            else:
                self._status(404, "NotFound", f'{kind} "{rest[0]}" not found')
            return
        wanted = dict(
            pair.split("=", 1) for pair in query.get("labelSelector", [""])[0].split(",") if "=" in pair
        )
        items = [o for o in stored.values() if wanted.items() <= o["metadata"]["labels"].items()]
        list_kind = {"deployments": "DeploymentList", "statefulsets": "StatefulSetList", "pods": "PodList"}
        self._send(
            200,
            {
                "kind": list_kind.get(kind, "List"),
                "apiVersion": "apps/v1" if kind in ("deployments", "statefulsets") else "v1",
                "metadata": {"resourceVersion": "42"},
                "items": items,
            },
        )

    def _port_forward(self, port: int, target: tuple[str, int]) -> None:
        """The WebSocket port-forward protocol (v4.channel.k8s.io) for one port: channel 0 carries
        data, channel 1 errors, each first announcing the port number; relayed to `target`."""
        accept = base64.b64encode(
            # The WebSocket handshake's own digest (RFC 6455), not a security choice.
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WEBSOCKET_GUID).encode()).digest()  # noqa: S324
        ).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        upstream = socket.create_connection(target)
        sending = threading.Lock()

        def send(payload: bytes, opcode: int = 0x2) -> None:
            size = len(payload)
            length = (
                bytes([size])
                if size < 126
                else b"\x7e" + struct.pack("!H", size)
                if size < 65536
                else b"\x7f" + struct.pack("!Q", size)
            )
            with sending:
                self.wfile.write(bytes([0x80 | opcode]) + length + payload)

        send(b"\x00" + struct.pack("<H", port))
        send(b"\x01" + struct.pack("<H", port))

        def from_upstream() -> None:
            # Either side may go first; the other then finds its socket closed.
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    send(b"\x00" + data)
                send(b"", opcode=0x8)

        threading.Thread(target=from_upstream, daemon=True).start()
        try:
            while header := _read_or_nothing(self.rfile, 2):
                opcode, size = header[0] & 0x0F, header[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", self.rfile.read(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", self.rfile.read(8))[0]
                mask = self.rfile.read(4)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
                if opcode == 0x8:
                    break
                if opcode == 0x2 and payload[:1] == b"\x00":
                    upstream.sendall(payload[1:])
        finally:
            upstream.close()
        self.close_connection = True


def _read_or_nothing(stream: Any, size: int) -> bytes:
    try:
        return bytes(stream.read(size))
    except OSError:
        return b""


WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture
def api() -> Iterator[ApiServerDouble]:
    server = ApiServerDouble()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "double", "cluster": {"server": server}}],
        "users": [{"name": "ops", "user": {"token": TOKEN}}],
        "contexts": [
            {"name": "double", "context": {"cluster": "double", "user": "ops", "namespace": NS}},
            {"name": "elsewhere", "context": {"cluster": "double", "user": "ops", "namespace": "shop"}},
        ],
        "current-context": "double",
    }
    path.write_text(json.dumps(config))  # JSON is YAML, which the kubeconfig is
    return path


@pytest.fixture(autouse=True)
def kubeconfig(api: ApiServerDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("LANTERN_SMOKE_TOKEN", raising=False)
    return path


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err


def test_status_reports_replicas_restarts_reasons_images_and_exits_1_when_unhealthy(
    api: ApiServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = api.objects["deployments"]["orders"]
    orders["spec"]["replicas"], orders["status"]["readyReplicas"] = 2, 1
    image, port = "lantern-orders:0.1.0", SERVICE_PORTS["orders"]
    api.objects["pods"]["orders-7d9f-abcde"] = pod(
        "orders-7d9f-abcde",
        "orders",
        image,
        port,
        restarts=3,
        last=terminated("OOMKilled", 137, "2026-12-01T10:05:00Z"),
    )
    api.objects["pods"]["orders-7d9f-fghij"] = pod(
        "orders-7d9f-fghij",
        "orders",
        image,
        port,
        ready=False,
        restarts=5,
        last=terminated("Error", 1, "2026-12-01T10:06:00Z"),
        waiting="CrashLoopBackOff",
    )
    payments = api.objects["pods"]["payments-7d9f-abcde"]
    payments["status"]["containerStatuses"][0] |= {
        "restartCount": 1,
        "lastState": {"terminated": terminated("OOMKilled", 137, "2026-12-01T10:01:00Z")},
    }

    assert lantern(["status"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"lantern status: release lantern in namespace lantern ({api.url})")
    table = {
        line.split()[0]: line.split()
        for line in out.splitlines()[2:]
        if line and not line.startswith("queues")
    }
    assert table["orders"][:6] == [
        "orders",
        "1/2",
        "8",
        "CrashLoopBackOff",
        "lantern-orders:0.1.0",
        "UNHEALTHY",
    ]
    assert table["payments"][:6] == ["payments", "1/1", "1", "OOMKilled", "lantern-payments:0.1.0", "ok"]
    assert table["gateway"][:6] == ["gateway", "1/1", "0", "-", "lantern-gateway:0.1.0", "ok"]
    assert table["rabbitmq"][:6] == ["rabbitmq", "1/1", "0", "-", "rabbitmq:4.2.6-management", "ok"]
    # The queues are read from the broker through a port-forward, which this API server refuses.
    assert api.upgrades == ["pods/rabbitmq-0?ports=5672 upgrade=websocket"]
    assert (
        "queues: cannot be read: cannot port-forward to pod lantern/rabbitmq-0 port 5672 through the API "
        "server: Handshake status 403 Forbidden" in out
    )


def test_token_is_signed_with_the_releases_gateway_auth_secret(
    api: ApiServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    api.objects["configmaps"]["gateway-config"]["data"] |= {"GATEWAY_JWT_ISSUER": "https://kind.local/"}
    assert lantern(["token", "--scopes", "orders:write, orders:read", "--ttl", "600"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer="https://kind.local/")
    assert claims["scope"] == "orders:write orders:read" and claims["sub"] == "operator"
    assert claims["exp"] - claims["iat"] == 600


def test_token_is_refused_when_the_gateway_checks_jwks(
    api: ApiServerDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = "https://login.staging.example.com/.well-known/jwks.json"
    api.objects["configmaps"]["gateway-config"]["data"]["GATEWAY_JWKS_URL"] = jwks
    assert lantern(["token"]) == 2
    assert f"checks tokens against GATEWAY_JWKS_URL={jwks}" in one_line(capsys.readouterr().err)
    assert lantern(["smoke"]) == 2  # no token given, none to mint
    assert "GATEWAY_JWKS_URL" in one_line(capsys.readouterr().err)


def test_an_unknown_context_is_one_line_naming_the_known_ones(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lantern(["--context", "prod", "status"]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"no context 'prod' in the kubeconfig {kubeconfig}; its contexts: double, elsewhere" in err


def test_a_namespace_without_the_release_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert lantern(["--context", "elsewhere", "status"]) == 2
    assert "no release 'lantern' in namespace 'shop'" in one_line(capsys.readouterr().err)
    assert lantern(["-n", NS, "--release", "other", "token"]) == 2
    assert "no release 'other' in namespace 'lantern'" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "pod_port"),
    [
        (["trace", "5c4f5847cd8d1518bf8d79d7ac795202"], "jaeger-7d9f-abcde port 16686"),
        (["smoke", "--timeout", "5"], "gateway-7d9f-abcde port 8080"),
        (["dead-letters", "list"], "rabbitmq-0 port 5672"),
        (["dead-letters", "replay", "--queue", "payments.order-events"], "rabbitmq-0 port 5672"),
    ],
)
def test_jaeger_gateway_and_broker_are_reached_by_port_forward_and_a_refusal_is_one_line(
    api: ApiServerDouble, argv: list[str], pod_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lantern(argv) == 2
    err = one_line(capsys.readouterr().err)
    assert (
        f"cannot port-forward to pod lantern/{pod_port} through the API server: Handshake status 403" in err
    )
    assert len(api.upgrades) == 1 and api.upgrades[0].endswith("upgrade=websocket")


def test_an_unreachable_api_server_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "gone", nowhere)))
    assert lantern(["status"]) == 2
    assert f"the API server at {nowhere} is unreachable" in one_line(capsys.readouterr().err)


@pytest.mark.rabbitmq
def test_a_broker_outside_the_cluster_is_read_from_the_secret_staging_names_and_reached_directly(
    api: ApiServerDouble, amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the staging values render: AMQP_URL from Secret lantern-amqp key url, no RabbitMQ in the release.
    del api.objects["statefulsets"]["rabbitmq"], api.objects["pods"]["rabbitmq-0"]
    api.objects["secrets"]["lantern-amqp"] = secret("lantern-amqp", url=amqp_url)
    for component in ("orders", "payments", "notifier"):
        container = api.objects["deployments"][component]["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [secret_env("AMQP_URL", "lantern-amqp", "url")]
    assert lantern(["dead-letters", "list"]) == 0
    assert capsys.readouterr().out.strip() == "0 dead letter(s)"
    assert api.upgrades == []


@pytest.mark.rabbitmq
def test_through_an_accepted_port_forward_status_reads_the_queues_and_trace_reads_jaeger(
    api: ApiServerDouble, amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The forward's data path: the real broker behind rabbitmq-0, a trace sink behind jaeger."""
    vhost_url = urlsplit(amqp_url)
    api.objects["secrets"]["rabbitmq-credentials"] = secret(
        "rabbitmq-credentials", url=f"amqp://guest:guest@rabbitmq:5672{vhost_url.path}"
    )
    api.forward_to["rabbitmq-0"] = (vhost_url.hostname or "localhost", vhost_url.port or 5672)

    async def declare_topology() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for spec in ORDER_FLOW.queues:
                for queue in (spec.work_queue(), spec.retry_queue(), spec.dead_queue()):
                    await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key="orders.payment-results.retry"
            )

    asyncio.run(declare_topology())
    with serving(sink_app(tmp_path / "spans.jsonl")) as sink:
        trace_id = "5c4f5847cd8d1518bf8d79d7ac795202"
        start = time.time_ns()
        span = {"traceId": trace_id, "spanId": "a" * 16, "name": "POST /api/orders", "kind": 2}
        span |= {"startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 5_000_000)}
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "gateway"}}]}
        export = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
        assert httpx.post(f"{sink}/v1/traces", json=export).status_code == 200
        api.forward_to["jaeger-7d9f-abcde"] = ("127.0.0.1", int(sink.rsplit(":", 1)[1]))

        assert lantern(["status"]) == 0
        out = capsys.readouterr().out
        rows = {
            line.split()[0]: line.split()[1:]
            for line in out.splitlines()
            if line.startswith(("payments.", "orders."))
        }
        assert rows == {
            "payments.order-events": ["0", "0", "0", "ok"],
            "orders.payment-results": ["0", "1", "0", "ok"],
        }

        assert lantern(["trace", trace_id]) == 0
        assert capsys.readouterr().out.startswith(f"trace {trace_id}  1 spans  1 services  5.0 ms")
    assert "pods/jaeger-7d9f-abcde?ports=16686 upgrade=websocket" in api.upgrades
