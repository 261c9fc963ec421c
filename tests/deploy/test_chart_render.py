"""The chart lints, renders in every mode and every object is valid Kubernetes 1.34."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lantern_runtime.smoke import build_parser
from tests.deploy.deploy_support import (
    CHART,
    REPO_ROOT,
    SERVICES,
    VALUES_FILES,
    Render,
    template_args,
    values_args,
)
from tests.deploy.keda_schemas import KEDA_SCHEMAS
from tests.deploy.monitoring_schemas import MONITORING_SCHEMAS

pytestmark = pytest.mark.deploy

K8S_VERSION = "1.34.0"

# kubernetes-validate carries only built-in kinds. Gateway API objects are checked
# against this small schema of the fields the chart uses (not the full CRD).
_PARENT_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "sectionName": {"type": "string"}},
    "additionalProperties": False,
}
GATEWAY_API_SCHEMAS: dict[str, dict[str, Any]] = {
    "Gateway": {
        "type": "object",
        "required": ["gatewayClassName", "listeners"],
        "additionalProperties": False,
        "properties": {
            "gatewayClassName": {"type": "string", "minLength": 1},
            "listeners": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "port", "protocol"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "hostname": {"type": "string"},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "protocol": {"enum": ["HTTP", "HTTPS", "TLS", "TCP", "UDP"]},
                        "tls": {
                            "type": "object",
                            "required": ["certificateRefs"],
                            "properties": {
                                "mode": {"enum": ["Terminate", "Passthrough"]},
                                "certificateRefs": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "object", "required": ["name"]},
                                },
                            },
                        },
                        "allowedRoutes": {"type": "object"},
                    },
                    "if": {"properties": {"protocol": {"const": "HTTPS"}}},
                    "then": {"required": ["tls"]},
                },
            },
        },
    },
    "HTTPRoute": {
        "type": "object",
        "required": ["parentRefs", "rules"],
        "additionalProperties": False,
        "properties": {
            "parentRefs": {"type": "array", "minItems": 1, "items": _PARENT_REF},
            "hostnames": {"type": "array", "items": {"type": "string"}},
            "rules": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matches": {"type": "array"},
                        "filters": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["type"],
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"const": "RequestRedirect"},
                                    "requestRedirect": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "scheme": {"enum": ["http", "https"]},
                                            "statusCode": {"enum": [301, 302]},
                                        },
                                    },
                                },
                            },
                        },
                        "backendRefs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "port"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "port": {"type": "integer"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("mode", list(VALUES_FILES))
def test_helm_lint_strict(helm, mode: str) -> None:
    helm("lint", "--strict", str(CHART), *values_args(mode))


def test_collector_config_is_the_single_otel_file(renders: dict[str, Render]) -> None:
    link = CHART / "files" / "collector.yaml"
    assert link.is_symlink(), "charts/lantern/files/collector.yaml must be a symlink"
    assert str(link.readlink()) == "../../../otel/collector.yaml"
    configmap = renders["default"].get("ConfigMap", "otel-collector-config")
    assert configmap["data"]["collector.yaml"].strip() == (
        (REPO_ROOT / "otel" / "collector.yaml").read_text().strip()
    )


def test_packaged_chart_carries_the_collector_config(helm, tmp_path: Path) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("lantern-*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.getmember("lantern/files/collector.yaml")
        assert member.isfile(), "the symlink must be packaged as the file it points to"
        extracted = tar.extractfile(member)
        assert extracted is not None
        packaged = extracted.read().decode()
    assert packaged == (REPO_ROOT / "otel" / "collector.yaml").read_text()


def test_envoy_gateway_class_matches_the_chart_default() -> None:
    gateway_class = yaml.safe_load((REPO_ROOT / "k8s" / "envoy-gatewayclass.yaml").read_text())
    assert gateway_class["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway_class["kind"] == "GatewayClass"
    assert gateway_class["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert gateway_class["metadata"]["name"] == chart_values["ingress"]["gatewayAPI"]["gatewayClassName"]


def test_every_object_is_valid_kubernetes(render: Render) -> None:
    for obj in render.objects:
        name = f"{render.mode}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("gateway.networking.k8s.io/"):
            assert obj["apiVersion"] == "gateway.networking.k8s.io/v1", name
            jsonschema.validate(obj["spec"], GATEWAY_API_SCHEMAS[obj["kind"]])
            continue
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", name
            jsonschema.validate(obj["spec"], MONITORING_SCHEMAS[obj["kind"]])
            continue
        if obj["apiVersion"].startswith("keda.sh/"):
            assert obj["apiVersion"] == "keda.sh/v1alpha1", name
            jsonschema.validate(obj["spec"], KEDA_SCHEMAS[obj["kind"]])
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{name}: {error.message} at {list(error.path)}") from None


def test_gateway_api_route_reaches_the_gateway_service(renders: dict[str, Render]) -> None:
    render = renders["staging"]
    gateway = render.get("Gateway", "lantern")
    route = render.get("HTTPRoute", "gateway")
    assert gateway["spec"]["gatewayClassName"] == "eg"
    https = [li for li in gateway["spec"]["listeners"] if li["protocol"] == "HTTPS"]
    assert https[0]["tls"]["certificateRefs"][0]["name"] == "lantern-staging-tls"
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "gateway", "port": 8080}]


def _listeners(gateway: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {listener["name"]: listener for listener in gateway["spec"]["listeners"]}


@pytest.mark.parametrize("mode", ["default", "staging"])
def test_with_tls_the_api_is_https_only_and_http_redirects(renders: dict[str, Render], mode: str) -> None:
    render = renders[mode]
    tls = render.values["ingress"]["gatewayAPI"]["tls"]["enabled"]
    listeners = _listeners(render.get("Gateway", "lantern"))
    routes = {r["metadata"]["name"]: r["spec"] for r in render.of_kind("HTTPRoute")}
    api = routes.pop("gateway")
    (parent,) = api["parentRefs"]
    assert parent == {"name": "lantern", "sectionName": "https" if tls else "http"}
    assert listeners[parent["sectionName"]]["protocol"] == ("HTTPS" if tls else "HTTP")
    if not tls:
        assert not routes, f"{mode}: a redirect without TLS"
        return
    # Plain HTTP: one rule, no backend, a permanent redirect to https on its default port.
    redirect = routes.pop("gateway-https-redirect")
    assert not routes
    assert redirect["parentRefs"] == [{"name": "lantern", "sectionName": "http"}]
    assert listeners["http"]["protocol"] == "HTTP"
    assert redirect.get("hostnames") == api.get("hostnames")
    (rule,) = redirect["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
    ]


def test_without_the_gateway_api_the_install_fails_and_says_what_to_install(helm) -> None:
    refused = helm(*template_args(gateway_api=False), check=False)
    assert refused.returncode != 0
    for needed in (
        "gateway.networking.k8s.io/v1 Gateway and HTTPRoute",
        "kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/",
        "ingress.ingress.enabled=true",
        "--api-versions",
    ):
        assert needed in refused.stderr, refused.stderr
    # The way out for rendering without a cluster, and the Ingress alternative.
    skipped = helm(*template_args("--set", "ingress.gatewayAPI.capabilityCheck=false", gateway_api=False))
    assert {o["kind"] for o in yaml.safe_load_all(skipped.stdout) if o} >= {"Gateway", "HTTPRoute"}
    ingress = helm(
        *template_args(
            *("--set", "ingress.gatewayAPI.enabled=false", "--set", "ingress.ingress.enabled=true"),
            gateway_api=False,
        )
    )
    assert "Ingress" in {o["kind"] for o in yaml.safe_load_all(ingress.stdout) if o}
    # kind runs without the Gateway API by default.
    helm(*template_args(*values_args("kind"), gateway_api=False))


def test_ingress_is_the_switchable_alternative(helm) -> None:
    args = template_args(
        "--set",
        "ingress.gatewayAPI.enabled=false",
        "--set",
        "ingress.ingress.enabled=true",
        "--set",
        "ingress.ingress.className=haproxy",
    )
    objects = [o for o in yaml.safe_load_all(helm(*args).stdout) if o]
    kinds = {o["kind"] for o in objects}
    assert "Ingress" in kinds
    assert not kinds & {"Gateway", "HTTPRoute"}
    for obj in objects:
        if obj["kind"] == "Ingress":
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _pod_specs(render: Render) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in render.objects
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}
    ]


def test_every_pod_meets_restricted_pod_security(render: Render) -> None:
    for name, pod in _pod_specs(render):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert isinstance(security["runAsUser"], int), name
        assert security["runAsUser"] > 0, name
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert {"requests", "limits"} <= set(container["resources"]), name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            tmp = mounts.get("/tmp")  # noqa: S108 - checks the mount, writes nothing
            assert tmp in tmp_volumes, f"{name}: /tmp is not an emptyDir"


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_services_follow_the_runtime_contract(render: Render) -> None:
    grace_needed = int(render.values["shared"]["env"]["SHUTDOWN_TIMEOUT"])
    for name, port in SERVICES.items():
        service = render.get("Service", name)
        assert [p["port"] for p in service["spec"]["ports"]] == [port]
        deployment = render.get("Deployment", name)
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == name
        assert "checksum/config" in pod["metadata"]["annotations"]
        (container,) = pod["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["spec"]["terminationGracePeriodSeconds"] >= grace_needed + pre_stop + 5, name

        env = _env(container)
        assert env["OTEL_SERVICE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.labels['app.kubernetes.io/component']"
        )
        attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
        order = list(env)
        for attribute, variable in [
            ("k8s.pod.name", "POD_NAME"),
            ("k8s.namespace.name", "POD_NAMESPACE"),
            ("k8s.node.name", "NODE_NAME"),
        ]:
            assert f"{attribute}=$({variable})" in attributes
            assert "fieldRef" in env[variable]["valueFrom"]
            # $(VAR) only expands variables defined earlier in the list.
            assert order.index(variable) < order.index("OTEL_RESOURCE_ATTRIBUTES")

        config = render.get("ConfigMap", f"{name}-config")["data"]
        assert config["PORT"] == str(port)
        assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert config["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http"
        # One of the conventions' well-known environments, whichever values file.
        environment = attributes.split("deployment.environment.name=", 1)[1].split(",", 1)[0]
        assert environment in ("development", "staging", "production"), environment
        assert render.get("PodDisruptionBudget", name)


def test_probes_leave_the_start_up_wait_to_the_service(render: Render) -> None:
    """A service waiting for its broker or database serves /healthz 200 and /readyz 503
    until STARTUP_TIMEOUT, then exits by itself. So the kubelet must not be the one to
    end that wait: startup and liveness probes ask /healthz, only readiness asks /readyz,
    and the startup probe gives the process time to import and bind its port."""
    assert int(render.values["shared"]["env"]["STARTUP_TIMEOUT"]) > 0
    for name in SERVICES:
        (container,) = render.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
        startup, liveness = container["startupProbe"], container["livenessProbe"]
        assert startup["httpGet"]["path"] == liveness["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, name
        config = render.get("ConfigMap", f"{name}-config")["data"]
        assert config["STARTUP_TIMEOUT"] == render.values["shared"]["env"]["STARTUP_TIMEOUT"]


def test_bank_stays_single_and_staging_autoscales(renders: dict[str, Render]) -> None:
    for render in renders.values():
        assert render.get("Deployment", "bank")["spec"]["replicas"] == 1
    staging = renders["staging"]
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in staging.of_kind("HorizontalPodAutoscaler")}
    assert scaled == {"gateway", "orders", "payments", "notifier"}
    for name in scaled:
        assert "replicas" not in staging.get("Deployment", name)["spec"]
    assert not renders["default"].of_kind("HorizontalPodAutoscaler")


def test_helm_test_hook_runs_the_smoke_module(render: Render) -> None:
    jobs = [j for j in render.of_kind("Job") if j["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    assert len(jobs) == 1
    (container,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    timeout = render.values["smokeTest"]["timeoutSeconds"]
    smoke = [
        "python",
        "-m",
        "lantern_runtime.smoke",
        "--gateway",
        "http://gateway:8080",
        "--jaeger",
        "http://jaeger:16686",
        "--timeout",
        str(timeout),
    ]
    gateway = render.get("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == gateway["image"]
    env = _env(container)
    if render.values["auth"]["jwksUrl"]:
        # OIDC: a token from the identity provider, kept in a Secret the operator made.
        assert container["command"] == smoke
        token = render.values["smokeTest"]["tokenSecret"]
        assert env["LANTERN_SMOKE_TOKEN"]["valueFrom"]["secretKeyRef"] == token
        assert "GATEWAY_JWT_SECRET" not in env
    else:
        # Development keys: the Job mints its token from the very secret the gateway checks.
        assert container["command"] == [*smoke, "--hs256-secret-env", "GATEWAY_JWT_SECRET"]
        assert env["GATEWAY_JWT_SECRET"] == _env(gateway)["GATEWAY_JWT_SECRET"]


@pytest.mark.parametrize("timeout", [None, 300])
def test_the_smoke_runs_for_smoke_test_timeout_seconds(helm, timeout: int | None) -> None:
    """smokeTest.timeoutSeconds reaches the smoke's own --timeout, as the smoke's parser
    reads it, and the Job's deadline leaves it room to report."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expected = timeout or values["smokeTest"]["timeoutSeconds"]
    extra = ("--set", f"smokeTest.timeoutSeconds={timeout}") if timeout else ()
    objects = [o for o in yaml.safe_load_all(helm(*template_args(*extra)).stdout) if o]
    (job,) = [o for o in objects if o["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "lantern_runtime.smoke"]
    args = build_parser().parse_args(command[3:])
    assert args.timeout == expected
    assert job["spec"]["activeDeadlineSeconds"] >= expected + 30


def test_config_change_rolls_the_pods(helm) -> None:
    def checksum(*extra: str) -> str:
        objects = [o for o in yaml.safe_load_all(helm(*template_args(*extra)).stdout) if o]
        (orders,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orders"]
        return orders["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum("--set", "shared.env.LOG_LEVEL=DEBUG")


def test_route_table_change_rolls_the_gateway(helm) -> None:
    def checksum(*extra: str) -> str:
        objects = [o for o in yaml.safe_load_all(helm(*template_args(*extra)).stdout) if o]
        (gateway,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway"]
        return gateway["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    routes = yaml.safe_load((CHART / "values.yaml").read_text())["edge"]["routes"]
    routes[0]["upstream"]["timeout"] = 3
    assert checksum() != checksum("--set-json", f"edge.routes={json.dumps(routes)}")


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("components.gateway.replica=3", "additional properties 'replica' not allowed"),
        ("components.gateway.replicas=three", "want integer"),
        # Any name is a component, of the one shape every component has.
        ("components.halfdone.port=8005", "at '/components/halfdone': missing properties 'enabled'"),
        ("components.Shipping_1.port=8005", "invalid propertyName 'Shipping_1'"),
        ("jaeger.storage.type=cassandra", "jaeger/storage/type"),
        (
            "postgres.external.existingSecrets=x",
            "additional properties 'existingSecrets' not allowed",
        ),
        ("postgres.external.urlKey=url", "additional properties 'urlKey' not allowed"),
        ("auth.jwksUrl=http://idp.example.com/jwks", "auth/jwksUrl"),
        ("auth.jwksEgressTo[0].cidr=idp.example.com", "auth/jwksEgressTo/0/cidr"),
        ("edge.rateLimit=0", "edge/rateLimit"),
        ("edge.forwardedAllowIps[0]=envoy", "edge/forwardedAllowIps/0"),
        ("edge.routes[0].scopes.FETCH[0]=orders:read", "invalid propertyName 'FETCH'"),
        ("edge.routes[0].upstream.retries=3", "additional properties 'retries' not allowed"),
        ("redis.url=redis://redis:6379", "additional properties 'url' not allowed"),
        ("smokeTest.tokenSecret.token=x", "additional properties 'token' not allowed"),
        ("networkPolicy.kubeAPIServer.cidrs[0]=0.0.0.0/0", "networkPolicy/kubeAPIServer/cidrs/0"),
    ],
)
def test_values_schema_rejects_bad_values(helm, override: str, complaint: str) -> None:
    result = helm(*template_args("--set", override), check=False)
    assert result.returncode != 0, f"--set {override} was accepted"
    assert complaint in result.stderr


def test_disabled_broker_without_a_url_fails_with_a_reason(helm) -> None:
    result = helm(*template_args("--set", "rabbitmq.enabled=false"), check=False)
    assert result.returncode != 0
    assert "rabbitmq.external.existingSecret" in result.stderr


# An OIDC key set, with the issuer and audience the chart requires alongside it.
OIDC = (
    "auth.jwksUrl=https://idp.example.com/jwks",
    "auth.issuer=https://idp.example.com/",
    "auth.audience=lantern",
)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        (
            [*OIDC, "smokeTest.tokenSecret.name=smoke-token"],
            "auth.jwksEgressTo is empty",
        ),
        (
            [
                *OIDC,
                "auth.jwksEgressTo[0].cidr=198.51.100.0/24",
                "auth.jwksEgressTo[0].ports[0]=443",
            ],
            "smokeTest.tokenSecret.name",
        ),
        (["redis.existingSecret=lantern-redis"], "redis.egressTo is empty"),
    ],
)
def test_incomplete_edge_settings_fail_with_a_reason(helm, overrides: list[str], complaint: str) -> None:
    args = [arg for override in overrides for arg in ("--set", override)]
    result = helm(*template_args(*args), check=False)
    assert result.returncode != 0, f"{overrides} were accepted"
    assert complaint in result.stderr


def test_development_keys_come_from_the_chart_secret_and_oidc_keeps_only_the_subject_key(
    renders: dict[str, Render], helm
) -> None:
    secret = renders["default"].get("Secret", "gateway-auth")["stringData"]
    assert set(secret) == {"jwt-secret", "subject-secret"}
    assert all(len(value) >= 32 for value in secret.values())
    assert secret["jwt-secret"] != secret["subject-secret"]
    oidc = [
        o
        for o in yaml.safe_load_all(
            helm(
                *template_args(
                    *(arg for value in OIDC for arg in ("--set", value)),
                    *("--set", "auth.jwksEgressTo[0].cidr=198.51.100.0/24"),
                    *("--set", "auth.jwksEgressTo[0].ports[0]=443"),
                    *("--set", "smokeTest.tokenSecret.name=smoke-token"),
                )
            ).stdout
        )
        if o
    ]
    (generated,) = [o for o in oidc if o["kind"] == "Secret" and o["metadata"]["name"] == "gateway-auth"]
    assert set(generated["stringData"]) == {"subject-secret"}
    assert not [o for o in renders["staging"].objects if o["metadata"]["name"] == "gateway-auth"]


def test_generated_secrets_outlive_an_uninstall(render: Render) -> None:
    """The PersistentVolumeClaims of RabbitMQ and PostgreSQL outlive `helm uninstall`, and
    both apply credentials only to an empty data directory. So the Secrets the chart
    generates stay too (resource-policy keep); the next install adopts them and its lookup
    reuses their values instead of generating passwords the kept data would refuse."""
    generated = {s["metadata"]["name"] for s in render.of_kind("Secret")}
    stores = ("rabbitmq", "postgres")
    expected = {f"{store}-credentials" for store in stores if render.values[store]["enabled"]}
    if not render.values["auth"]["existingSecret"]:
        expected.add("gateway-auth")
    assert generated == expected, render.mode
    for name in generated:
        annotations = render.get("Secret", name)["metadata"].get("annotations", {})
        assert annotations.get("helm.sh/resource-policy") == "keep", f"{render.mode}: Secret {name}"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret" .root.Release.Namespace .secret' in helpers


_BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _bytes(quantity: str) -> int:
    """A Kubernetes or RabbitMQ memory quantity in binary units ("768Mi", "600MiB"), in bytes."""
    number = quantity.rstrip("KMGiB")
    return int(number) * _BINARY_UNITS.get(quantity[len(number) :], 1)


def test_statefulsets_are_governed_by_headless_services(render: Render) -> None:
    for statefulset in render.of_kind("StatefulSet"):
        name = statefulset["metadata"]["name"]
        governing = render.get("Service", statefulset["spec"]["serviceName"])
        assert governing["spec"]["clusterIP"] == "None", f"{render.mode}: {name}"
        pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert governing["spec"]["selector"].items() <= pod_labels.items()
        # Clients keep a Service with a cluster IP under the plain name.
        assert render.get("Service", name)["spec"].get("clusterIP") != "None"
        # The kubelet leaves the data volume's modes alone once it belongs to fsGroup.
        security = statefulset["spec"]["template"]["spec"]["securityContext"]
        assert security["fsGroupChangePolicy"] == "OnRootMismatch", f"{render.mode}: {name}"


def test_rabbitmq_memory_fits_its_limit(render: Render) -> None:
    """The quorum queues' write-ahead log and the memory alarm sit inside the container's
    limit: RabbitMQ's own default WAL (512 MiB) would not."""
    if not render.values["rabbitmq"]["enabled"]:
        return
    statefulset = render.get("StatefulSet", "rabbitmq")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert _bytes(container["resources"]["requests"]["memory"]) >= limit // 2
    conf_text = render.get("ConfigMap", "rabbitmq-config")["data"]["30-lantern.conf"]
    conf = dict(line.split(" = ") for line in conf_text.splitlines())
    wal = int(conf["raft.wal_max_size_bytes"])
    watermark = _bytes(conf["vm_memory_high_watermark.absolute"])
    assert wal <= 128 * 2**20 < 512 * 2**20
    assert wal * 4 <= watermark <= limit * 0.7, (wal, watermark, limit)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/rabbitmq/conf.d/30-lantern.conf"
    assert mount["subPath"] == "30-lantern.conf"
    # subPath mounts are not refreshed: a changed config must roll the pod.
    assert "checksum/config" in statefulset["spec"]["template"]["metadata"]["annotations"]


# An order's trace is about 25 spans (the 11 of the trace contract, plus HTTP and
# database detail); 4 KiB per stored span is a generous estimate, not a measurement.
JAEGER_BYTES_PER_TRACE = 25 * 4 * 2**10


def test_jaeger_memory_store_is_bounded_within_its_limit(render: Render) -> None:
    config = yaml.safe_load(render.get("ConfigMap", "jaeger-config")["data"]["config.yaml"])
    backend = config["extensions"]["jaeger_storage"]["backends"]["traces"]
    if "memory" not in backend:
        return
    (container,) = render.get("Deployment", "jaeger")["spec"]["template"]["spec"]["containers"]
    limit = _bytes(container["resources"]["limits"]["memory"])
    max_traces = backend["memory"]["max_traces"]
    assert max_traces == render.values["jaeger"]["storage"]["memory"]["maxTraces"]
    assert max_traces * JAEGER_BYTES_PER_TRACE <= limit / 2, f"{max_traces} traces in {limit} bytes"


def test_replicated_deployments_spread_over_nodes_and_zones(render: Render) -> None:
    scaled = {h["spec"]["scaleTargetRef"]["name"]: h for h in render.of_kind("HorizontalPodAutoscaler")}
    for deployment in render.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        hpa = scaled.get(name)
        most = hpa["spec"]["maxReplicas"] if hpa else deployment["spec"]["replicas"]
        pod = deployment["spec"]["template"]
        constraints = pod["spec"].get("topologySpreadConstraints", [])
        if most <= 1:
            assert not constraints, f"{render.mode}: {name} has one replica and nothing to spread"
            continue
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, f"{render.mode}: {name}"
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
            # A preference: a small cluster must still schedule every replica.
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


def test_jaeger_badger_storage_uses_a_volume(renders: dict[str, Render]) -> None:
    staging = renders["staging"]
    config = yaml.safe_load(staging.get("ConfigMap", "jaeger-config")["data"]["config.yaml"])
    badger = config["extensions"]["jaeger_storage"]["backends"]["traces"]["badger"]
    assert badger["directories"]["keys"].startswith("/badger/")
    assert staging.get("PersistentVolumeClaim", "jaeger-data")
    default = yaml.safe_load(renders["default"].get("ConfigMap", "jaeger-config")["data"]["config.yaml"])
    assert "memory" in default["extensions"]["jaeger_storage"]["backends"]["traces"]


def test_collector_pipeline_uses_current_component_names() -> None:
    config = yaml.safe_load((REPO_ROOT / "otel" / "collector.yaml").read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["processors"] == ["memory_limiter", "k8s_attributes"]
    assert set(pipelines["traces"]["exporters"]) == {"span_metrics", "forward/sampling"}
    assert pipelines["traces/sampled"]["exporters"] == ["otlp_grpc/jaeger"]
    assert pipelines["metrics/spans"]["receivers"] == ["span_metrics"]
    assert pipelines["metrics/spans"]["exporters"] == pipelines["metrics"]["exporters"] == ["prometheus"]
    assert config["exporters"]["otlp_grpc/jaeger"]["endpoint"] == "${env:JAEGER_OTLP_GRPC_ENDPOINT}"
    # Deprecated aliases in collector-contrib 0.160.0; their new names are used above.
    names = {
        key.split("/")[0]
        for section in ("receivers", "processors", "exporters", "connectors")
        for key in config[section]
    }
    assert not names & {"otlphttp", "k8sattributes", "spanmetrics"}
    assert "otlp" not in config["exporters"]


def test_collector_reads_kubernetes_metadata_of_its_own_namespace_only(render: Render) -> None:
    """k8s_attributes is filtered to the collector's namespace and extracts pod-level
    metadata only, so a Role in that namespace is all it needs: no cluster-wide read."""
    kinds = {o["kind"] for o in render.objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, render.mode
    config = yaml.safe_load(render.get("ConfigMap", "otel-collector-config")["data"]["collector.yaml"])
    k8s = config["processors"]["k8s_attributes"]
    assert k8s["filter"] == {"namespace": "${env:K8S_NAMESPACE}"}
    # Node or namespace metadata would need nodes or namespaces, which are cluster-scoped.
    assert not [m for m in k8s["extract"]["metadata"] if m.startswith(("k8s.namespace.", "k8s.node.uid"))]
    assert not [a for a in k8s["extract"].get("labels", []) if a.get("from") in {"namespace", "node"}]
    collector = render.get("Deployment", "otel-collector")["spec"]["template"]["spec"]
    env = _env(collector["containers"][0])
    assert env["K8S_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    role = render.get("Role", "otel-collector")
    granted = {
        (group, resource) for r in role["rules"] for group in r["apiGroups"] for resource in r["resources"]
    }
    assert granted == {("", "pods"), ("apps", "replicasets")}
    assert all(set(r["verbs"]) == {"get", "list", "watch"} for r in role["rules"])
    binding = render.get("RoleBinding", "otel-collector")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "otel-collector",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": collector["serviceAccountName"], "namespace": "lantern"}
    ]


def test_pinned_third_party_images(render: Render) -> None:
    for name, pod in _pod_specs(render):
        for container in pod["containers"]:
            image: str = container["image"]
            tag = image.rsplit(":", 1)[-1] if "@" not in image else image.split("@")[1]
            assert tag, f"{name}: {image} has no tag"
            assert tag != "latest", f"{name}: {image} is not pinned"


def test_kind_cluster_maps_host_ports_to_the_chart_node_ports(renders: dict[str, Render]) -> None:
    kind = yaml.safe_load(Path(REPO_ROOT / "k8s" / "kind-cluster.yaml").read_text())
    mappings = {m["hostPort"]: m["containerPort"] for n in kind["nodes"] for m in n["extraPortMappings"]}
    render = renders["kind"]
    gateway_port = render.get("Service", "gateway")["spec"]["ports"][0]
    assert render.get("Service", "gateway")["spec"]["type"] == "NodePort"
    assert mappings[8080] == gateway_port["nodePort"]
    ui = next(p for p in render.get("Service", "jaeger")["spec"]["ports"] if p["port"] == 16686)
    assert mappings[16686] == ui["nodePort"]


def test_namespace_enforces_restricted_pod_security() -> None:
    namespace = yaml.safe_load((REPO_ROOT / "k8s" / "namespace.yaml").read_text())
    kubernetes_validate.validate(namespace, K8S_VERSION, strict=True)
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["metadata"]["name"] == "lantern"


def test_cert_manager_can_issue_the_gateway_and_ingress_certificates(helm) -> None:
    tls = "tls.enabled=true,{0}.tls.secretName=lantern-tls,{0}.tls.certManagerIssuer=letsencrypt"
    gateway_api = helm(
        *template_args(
            "--set",
            "ingress.gatewayAPI.hostname=shop.example.com",
            "--set",
            "ingress.gatewayAPI." + tls.format("ingress.gatewayAPI"),
        )
    ).stdout
    [gateway] = [o for o in yaml.safe_load_all(gateway_api) if o and o["kind"] == "Gateway"]
    assert gateway["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}

    ingress_render = helm(
        *template_args(
            "--set",
            "ingress.gatewayAPI.enabled=false",
            "--set",
            "ingress.ingress.enabled=true",
            "--set",
            "ingress.ingress." + tls.format("ingress.ingress"),
        )
    ).stdout
    [ingress] = [o for o in yaml.safe_load_all(ingress_render) if o and o["kind"] == "Ingress"]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"][0]["secretName"] == "lantern-tls"

    refused = helm(
        *template_args("--set", "ingress.gatewayAPI." + tls.format("ingress.gatewayAPI")), check=False
    )
    assert refused.returncode != 0
    assert "needs ingress.gatewayAPI.hostname" in refused.stderr
