"""Everything the render refers to exists: Services select pods, URLs name Services
and their ports, and every ConfigMap, Secret and account referenced is rendered or
declared external in values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.deploy.deploy_support import Render

pytestmark = pytest.mark.deploy

WORKLOADS = {"Deployment", "StatefulSet", "Job"}
URL_VARIABLES = {
    "ORDERS_URL",
    "BANK_URL",
    "AMQP_URL",
    "DATABASE_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
}
DEFAULT_PORTS = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671}


def _pods(render: Render) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in render.objects:
        if obj["kind"] in WORKLOADS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def _external_secrets(render: Render) -> set[str]:
    values = render.values
    names = {
        values["rabbitmq"]["external"]["existingSecret"],
        values["postgres"]["external"]["existingSecret"],
        values["ingress"]["gatewayAPI"]["tls"]["secretName"],
        values["ingress"]["ingress"]["tls"]["secretName"],
    }
    return {n for n in names if n}


def _secret_value(render: Render, name: str, key: str) -> str | None:
    """The rendered Secret's value, or None when the Secret is declared external."""
    if name in _external_secrets(render):
        return None
    secret = render.get("Secret", name)
    assert key in secret["stringData"], f"{render.mode}: Secret {name} has no key {key!r}"
    return str(secret["stringData"][key])


def _resolved_env(render: Render, container: dict[str, Any]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(render.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = _secret_value(render, ref["name"], ref["key"])
    return env


def _service_port(render: Render, host: str, port: int, where: str) -> None:
    service = render.get("Service", host)
    ports = [p["port"] for p in service["spec"]["ports"]]
    assert port in ports, f"{where}: Service {host} has ports {ports}, not {port}"


def test_every_service_selects_a_workload_port(render: Render) -> None:
    pods = list(_pods(render))
    for service in render.of_kind("Service"):
        selector = service["spec"]["selector"]
        assert selector, f"{service['metadata']['name']} has no selector"
        matched = [
            template for _, template in pods if selector.items() <= template["metadata"]["labels"].items()
        ]
        assert matched, f"{render.mode}: Service {service['metadata']['name']} selects no pods"
        container_ports = {
            (p.get("name"), p["containerPort"])
            for template in matched
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(target in pair for pair in container_ports), (
                f"{render.mode}: Service {service['metadata']['name']} targets {target}, "
                f"which no selected container exposes"
            )


def test_every_url_names_a_service_and_its_port(render: Render) -> None:
    checked = set()
    for where, template in _pods(render):
        for container in template["spec"]["containers"]:
            env = _resolved_env(render, container)
            for name in URL_VARIABLES & env.keys():
                url = env[name]
                if url is None:  # held in an external Secret
                    continue
                parts = urlsplit(url)
                if parts.scheme.startswith("sqlite"):
                    assert parts.path.startswith("//tmp/"), f"{where}: SQLite outside /tmp: {url}"
                    continue
                port = parts.port or DEFAULT_PORTS[parts.scheme]
                _service_port(render, parts.hostname or "", port, f"{where} {name}")
                checked.add(name)
            if "JAEGER_OTLP_GRPC_ENDPOINT" in env:
                host, port = str(env["JAEGER_OTLP_GRPC_ENDPOINT"]).split(":")
                _service_port(render, host, int(port), f"{where} JAEGER_OTLP_GRPC_ENDPOINT")
                checked.add("JAEGER_OTLP_GRPC_ENDPOINT")
        command = template["spec"]["containers"][0].get("command", [])
        for flag in ("--gateway", "--jaeger"):
            if flag in command:
                parts = urlsplit(command[command.index(flag) + 1])
                _service_port(render, parts.hostname or "", parts.port or 80, f"{where} {flag}")
    expected = {
        "ORDERS_URL",
        "BANK_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "JAEGER_OTLP_GRPC_ENDPOINT",
    }
    if render.values["rabbitmq"]["enabled"]:
        expected.add("AMQP_URL")
    if render.values["postgres"]["enabled"]:
        expected.add("DATABASE_URL")
    assert expected <= checked


def test_amqp_and_database_urls_reach_the_apps_that_need_them(render: Render) -> None:
    for name, needs in {
        "orders": {"AMQP_URL", "DATABASE_URL"},
        "payments": {"AMQP_URL", "BANK_URL"},
        "notifier": {"AMQP_URL"},
        "gateway": {"ORDERS_URL"},
    }.items():
        (container,) = render.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"] for e in container["env"]}
        env |= set(render.get("ConfigMap", f"{name}-config")["data"])
        assert needs <= env, f"{render.mode}: {name} lacks {needs - env}"


def _references(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of every object this one points at by name."""
    kind = obj["kind"]
    if kind in WORKLOADS:
        pod = obj["spec"]["template"]["spec"]
        if "serviceAccountName" in pod:
            yield "ServiceAccount", pod["serviceAccountName"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                yield "ConfigMap", volume["configMap"]["name"]
            if "secret" in volume:
                yield "Secret", volume["secret"]["secretName"]
            if "persistentVolumeClaim" in volume:
                yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    yield "ConfigMap", source["configMapRef"]["name"]
                if "secretRef" in source:
                    yield "Secret", source["secretRef"]["name"]
            for var in container.get("env", []):
                value_from = var.get("valueFrom", {})
                if "secretKeyRef" in value_from:
                    yield "Secret", value_from["secretKeyRef"]["name"]
                if "configMapKeyRef" in value_from:
                    yield "ConfigMap", value_from["configMapKeyRef"]["name"]
        if kind == "StatefulSet":
            yield "Service", obj["spec"]["serviceName"]
    elif kind == "HorizontalPodAutoscaler":
        yield obj["spec"]["scaleTargetRef"]["kind"], obj["spec"]["scaleTargetRef"]["name"]
    elif kind == "ClusterRoleBinding":
        yield "ClusterRole", obj["roleRef"]["name"]
        for subject in obj["subjects"]:
            yield subject["kind"], subject["name"]
    elif kind == "HTTPRoute":
        for parent in obj["spec"]["parentRefs"]:
            yield "Gateway", parent["name"]
        for rule in obj["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                yield "Service", backend["name"]
    elif kind == "Gateway":
        for listener in obj["spec"]["listeners"]:
            for ref in listener.get("tls", {}).get("certificateRefs", []):
                yield "Secret", ref["name"]
    elif kind == "Ingress":
        for tls in obj["spec"].get("tls", []):
            yield "Secret", tls["secretName"]
        for rule in obj["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                yield "Service", path["backend"]["service"]["name"]


def test_every_reference_resolves(render: Render) -> None:
    present = {(o["kind"], o["metadata"]["name"]) for o in render.objects}
    external = _external_secrets(render)
    for obj in render.objects:
        for kind, name in _references(obj):
            if kind == "Secret" and name in external:
                continue
            source = f"{obj['kind']}/{obj['metadata']['name']}"
            assert (kind, name) in present, f"{render.mode}: {source} refers to missing {kind}/{name}"


def test_staging_takes_broker_and_database_from_existing_secrets(
    renders: dict[str, Render],
) -> None:
    staging = renders["staging"]
    (orders,) = staging.get("Deployment", "orders")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in orders["env"]}
    assert env["AMQP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "lantern-amqp", "key": "url"}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "lantern-database",
        "key": "url",
    }
    names = {(o["kind"], o["metadata"]["name"]) for o in staging.objects}
    assert not {("StatefulSet", "rabbitmq"), ("StatefulSet", "postgres")} & names
