"""Everything the render refers to exists: Services select pods, URLs name Services
and their ports, and every ConfigMap, Secret and account referenced is rendered or
declared external in values."""

from __future__ import annotations

import json
import os
import posixpath
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.auth import TokenVerifier
from gateway.routes import Route
from gateway.settings import GatewaySettings
from tests.deploy.deploy_support import SERVICES, WITH_DATABASE, template_args

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.deploy.deploy_support import Render

pytestmark = pytest.mark.deploy

WORKLOADS = {"Deployment", "StatefulSet", "Job"}
URL_VARIABLES = {
    "ORDERS_URL",
    "BANK_URL",
    "AMQP_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
}
DEFAULT_PORTS = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671}
DATABASE_OWNERS = WITH_DATABASE


def _pods(render: Render) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in render.objects:
        if obj["kind"] in WORKLOADS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def _external_secrets(render: Render) -> set[str]:
    values = render.values
    names = {
        values["rabbitmq"]["external"]["existingSecret"],
        values["postgres"]["external"]["existingSecret"],
        values["auth"]["existingSecret"],
        values["redis"]["existingSecret"],
        values["smokeTest"]["tokenSecret"]["name"],
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
    components = render.values["components"]
    # Whatever a component declares, the reference flow's extras below.
    declared = {
        name: {env for env, flag in (("AMQP_URL", "amqp"), ("DATABASE_URL", "database")) if c[flag]}
        for name, c in components.items()
        if name in SERVICES
    }
    for name, needs in {
        **declared,
        "orders": {"AMQP_URL", "DATABASE_URL"},
        "payments": {"AMQP_URL", "BANK_URL", "DATABASE_URL"},
        "notifier": {"AMQP_URL", "DATABASE_URL"},
        "gateway": {"ORDERS_URL", "GATEWAY_ROUTES_FILE"},
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
    elif kind in {"RoleBinding", "ClusterRoleBinding"}:
        yield obj["roleRef"]["kind"], obj["roleRef"]["name"]
        for subject in obj["subjects"]:
            yield subject["kind"], subject["name"]
    elif kind == "HTTPRoute":
        for parent in obj["spec"]["parentRefs"]:
            yield "Gateway", parent["name"]
        for rule in obj["spec"]["rules"]:
            for backend in rule.get("backendRefs", []):
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


def _container(render: Render, deployment: str) -> dict[str, Any]:
    (container,) = render.get("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return container


def _env_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_staging_takes_broker_and_databases_from_existing_secrets(
    renders: dict[str, Render],
) -> None:
    staging = renders["staging"]
    for name in DATABASE_OWNERS:
        env = _env_refs(_container(staging, name))
        # Each service's own broker user; key `url` (the admin) is the topology step's only.
        assert env["AMQP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "lantern-amqp", "key": f"{name}-url"}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "lantern-database",
            "key": f"{name}-url",
        }
    names = {(o["kind"], o["metadata"]["name"]) for o in staging.objects}
    assert not {("StatefulSet", "rabbitmq"), ("StatefulSet", "postgres")} & names


def test_each_service_gets_its_own_database(render: Render) -> None:
    """DATABASE_URL names the postgres Service and a database and user of the service's
    own, created by the init script; or it comes from the external Secret."""
    postgres = render.values["postgres"]
    for name in DATABASE_OWNERS:
        ref = _env_refs(_container(render, name))["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        if not postgres["enabled"]:
            assert ref == {"name": postgres["external"]["existingSecret"], "key": f"{name}-url"}
            continue
        url = urlsplit(str(_secret_value(render, ref["name"], ref["key"])))
        assert (url.scheme, url.hostname, url.port) == ("postgresql+asyncpg", "postgres", 5432)
        assert (url.path, url.username) == (f"/{name}", name), f"{render.mode}: {name} shares a database"
        assert url.password == _secret_value(render, ref["name"], f"{name}-password")
    if postgres["enabled"]:
        statefulset = render.get("StatefulSet", "postgres")["spec"]["template"]["spec"]
        (container,) = statefulset["containers"]
        env = _env_refs(container)
        script = render.get("ConfigMap", "postgres-init")["data"]["10-service-databases.sh"]
        for name in DATABASE_OWNERS:
            variable = f"{name.upper()}_PASSWORD"
            assert env[variable]["valueFrom"]["secretKeyRef"] == {
                "name": "postgres-credentials",
                "key": f"{name}-password",
            }
            assert f'service_database {name} "${variable}"' in script
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        init = next(v for v in statefulset["volumes"] if v["name"] == mounts["/docker-entrypoint-initdb.d"])
        assert init["configMap"]["name"] == "postgres-init"


def test_without_postgres_each_service_uses_its_own_sqlite_file(helm) -> None:
    objects = [
        o for o in yaml.safe_load_all(helm(*template_args("--set", "postgres.enabled=false")).stdout) if o
    ]
    for name in DATABASE_OWNERS:
        (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        env = _env_refs(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["DATABASE_URL"]["value"] == f"sqlite+aiosqlite:////tmp/{name}.db"
    assert not [o for o in objects if o["metadata"]["name"].startswith("postgres")]


def test_the_gateway_always_has_a_key_to_check_tokens_with(render: Render) -> None:
    container = _container(render, "gateway")
    config = render.get("ConfigMap", "gateway-config")["data"]
    env = _env_refs(container)
    jwks_url = config.get("GATEWAY_JWKS_URL")
    assert jwks_url == (render.values["auth"]["jwksUrl"] or None)
    if jwks_url:
        assert jwks_url.startswith("https://")
        assert "GATEWAY_JWT_SECRET" not in env
        return
    ref = env["GATEWAY_JWT_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = _secret_value(render, ref["name"], ref["key"])
    assert secret is None or len(secret) >= 32, f"{render.mode}: the HS256 secret is too short"


def test_the_gateway_and_the_services_that_trust_the_subject_share_its_secret(render: Render) -> None:
    components = render.values["components"]
    refs = {
        name: _env_refs(_container(render, name))["GATEWAY_SUBJECT_SECRET"]["valueFrom"]["secretKeyRef"]
        for name in SERVICES
        if name == "gateway" or components[name].get("trustsSubject")
    }
    assert "orders" in refs
    assert len({json.dumps(ref, sort_keys=True) for ref in refs.values()}) == 1, refs
    ref = refs["gateway"]
    assert ref["key"] == "subject-secret"
    secret = _secret_value(render, ref["name"], ref["key"])
    assert secret is None or len(secret) >= 32


def test_the_route_table_is_valid_for_the_gateway_and_reaches_rendered_services(render: Render) -> None:
    config = render.get("ConfigMap", "gateway-config")["data"]
    routes_file = config["GATEWAY_ROUTES_FILE"]
    pod = render.get("Deployment", "gateway")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[posixpath.dirname(routes_file)])
    configmap = render.get("ConfigMap", volume["configMap"]["name"])
    entries = json.loads(configmap["data"][posixpath.basename(routes_file)])
    assert entries, f"{render.mode}: the route table is empty"
    for entry in entries:
        route = Route.model_validate(entry)
        _service_port(render, route.service, route.port, f"{render.mode}: route {route.prefix}")
    orders = next(Route.model_validate(e) for e in entries if e["prefix"] == "/api/orders")
    assert orders.scopes == {"POST": ["orders:write"], "GET": ["orders:read"]}
    assert (orders.service, orders.port) == ("orders", 8001)


def test_a_route_to_a_missing_service_or_port_fails_with_a_reason(helm) -> None:
    for service, port, complaint in (("ledger", 8001, '"ledger"'), ("orders", 9000, "port 9000")):
        route = {"prefix": "/api/x", "service": service, "port": port, "scopes": {"GET": ["x"]}}
        result = helm(*template_args("--set-json", f"edge.routes={json.dumps([route])}"), check=False)
        assert result.returncode != 0, route
        assert complaint in result.stderr, result.stderr
        assert "edge.routes[0]" in result.stderr, result.stderr


def test_the_gateway_reads_redis_from_the_existing_secret_in_staging(renders: dict[str, Render]) -> None:
    staging = renders["staging"]
    env = _env_refs(_container(staging, "gateway"))
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "lantern-redis", "key": "url"}
    assert "REDIS_URL" not in _env_refs(_container(renders["default"], "gateway"))
    assert staging.get("ConfigMap", "gateway-config")["data"]["GATEWAY_HSTS_MAX_AGE"] == "31536000"
    assert "GATEWAY_HSTS_MAX_AGE" not in renders["kind"].get("ConfigMap", "gateway-config")["data"]


def test_the_gateway_settings_load_from_the_rendered_environment(
    render: Render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the gateway pod would read parses with the gateway's own settings; values held
    in external Secrets are stood in for by 48-character placeholders."""
    container = _container(render, "gateway")
    env = {name: value or "x" * 48 for name, value in _resolved_env(render, container).items()}
    routes_file = tmp_path / "routes.json"
    routes_file.write_text(render.get("ConfigMap", "gateway-routes")["data"]["routes.json"])
    env["GATEWAY_ROUTES_FILE"] = str(routes_file)
    for name in [n for n in os.environ if n.startswith(("GATEWAY_", "REDIS_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    edge = settings.edge
    TokenVerifier(
        secret=edge.jwt_secret.get_secret_value() if edge.jwt_secret else None,
        jwks_url=edge.jwks_url,
        issuer=edge.jwt_issuer,
        audience=edge.jwt_audience,
    )
    assert edge.subject_secret is not None
    assert edge.rate_limit == render.values["edge"]["rateLimit"]
    prefixes = {route.prefix for route in settings.route_table().routes}
    assert prefixes == {route["prefix"] for route in render.values["edge"]["routes"]}


LOOPBACK = re.compile(r"localhost|127\.\d+\.\d+\.\d+|\[?::1\]?(?![0-9a-f:])", re.IGNORECASE)


def test_services_find_each_other_by_service_name_not_loopback(render: Render) -> None:
    """Each pod has its own loopback: a URL to localhost in a Deployment's environment
    (from its ConfigMap, its own variables or a Secret the chart generates) reaches
    nothing in Kubernetes. Other pods are reached by their Service names."""
    for deployment in render.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for variable, value in _resolved_env(render, container).items():
                assert not LOOPBACK.search(value or ""), f"{render.mode}: {name} {variable}={value}"
            assert not LOOPBACK.search(" ".join(container.get("args", []) + container.get("command", [])))
