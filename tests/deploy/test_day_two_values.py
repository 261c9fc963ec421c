"""Values users pass every day render right: tags as numbers, `*` where the server takes it,
any annotation value, Go durations; Recreate for the bank; pull secrets on every pod;
the pull policy of an untagged image; Jaeger's volume ownership fixed once."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import pytest
import yaml
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.settings import EdgeSettings
from tests.deploy.deploy_support import SERVICES, template_args, values_args

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from pathlib import Path

    Helm = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.deploy

K8S_VERSION = "1.34.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    objects = [o for o in yaml.safe_load_all(helm(*template_args(*args)).stdout) if o]
    for obj in objects:
        # Kinds kubernetes-validate does not carry; test_chart_render checks their structure.
        if obj["kind"] not in {
            "Gateway",
            "HTTPRoute",
            "ServiceMonitor",
            "PrometheusRule",
            "ScaledObject",
            "TriggerAuthentication",
        }:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    return objects


def get(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
            out[f"{obj['kind']}/{obj['metadata']['name']}"] = spec
    return out


def values_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return str(path)


def refusal(helm: Helm, *args: str) -> str:
    result = helm(*template_args(*args), check=False)
    assert result.returncode != 0, f"{args} was accepted"
    return result.stderr


# --- 3. Image tags, `*`, annotation values, Go durations ---------------------------------


@pytest.mark.parametrize("how", ["--set", "values file"])
def test_a_numeric_image_tag_renders_as_the_same_string(helm: Helm, tmp_path: Path, how: str) -> None:
    # A values file hands Helm a float64, which would print as 2.0261201e+07.
    if how == "--set":
        args: tuple[str, ...] = ("--set", "components.gateway.image.tag=20261201")
    else:
        args = ("--values", values_file(tmp_path, "components:\n  gateway:\n    image: {tag: 20261201}\n"))
    objects = render(helm, *args)
    pod = get(objects, "Deployment", "gateway")["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "lantern:20261201"
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "20261201"
    smoke = get(objects, "Job", "lantern-smoke")["spec"]["template"]["spec"]["containers"][0]
    assert smoke["image"] == "lantern:20261201"


def test_a_decimal_image_tag_must_be_quoted(helm: Helm, tmp_path: Path) -> None:
    """YAML reads 1.10 as the number 1.1: refused rather than rendered as the wrong tag."""
    stderr = refusal(
        helm, "--values", values_file(tmp_path, "components:\n  orders:\n    image: {tag: 1.10}\n")
    )
    assert "components.orders.image.tag" in stderr.replace("/", ".")


def _gateway_config(objects: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = get(objects, "ConfigMap", "gateway-config")["data"]
    return data


async def _call(app: Any, client: str, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """One GET through an ASGI middleware: the scope the app saw, the response headers."""
    seen: dict[str, Any] = {}
    sent: dict[str, str] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.update({k.decode(): v.decode() for k, v in message["headers"]})

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "scheme": "http",
        "client": (client, 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await app(inner)(scope, receive, send)
    return seen, sent


def test_star_is_accepted_where_uvicorn_and_the_gateways_cors_take_it(helm: Helm) -> None:
    config = _gateway_config(
        render(helm, "--set-json", 'edge.forwardedAllowIps=["*"]', "--set-json", 'edge.corsOrigins=["*"]')
    )
    assert config["FORWARDED_ALLOW_IPS"] == "*"
    assert config["GATEWAY_CORS_ORIGINS"] == "*"
    # uvicorn trusts every proxy only for exactly "*": a client it has never heard of is believed.
    trusted = config["FORWARDED_ALLOW_IPS"]
    scope, _ = asyncio.run(
        _call(
            lambda app: ProxyHeadersMiddleware(app, trusted_hosts=trusted),
            "10.99.1.7",
            {"X-Forwarded-For": "203.0.113.9"},
        )
    )
    assert scope["client"][0] == "203.0.113.9"
    # The gateway's settings parse it to ["*"], which Starlette's CORS answers for any origin.
    origins = EdgeSettings.model_validate({"cors_origins": config["GATEWAY_CORS_ORIGINS"]}).cors_origins
    assert origins == ["*"]
    _, headers = asyncio.run(
        _call(
            lambda app: CORSMiddleware(app, allow_origins=origins),
            "10.0.0.1",
            {"Origin": "https://anywhere.example"},
        )
    )
    assert headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("override", "value"),
    [
        # uvicorn trusts all only for "*" alone; with other entries it would be a hostname.
        ("edge.forwardedAllowIps", '["*", "10.0.0.0/8"]'),
        ("edge.corsOrigins", '["*", "https://app.example.com"]'),
        ("edge.corsOrigins", '["app.example.com"]'),
    ],
)
def test_star_mixed_with_entries_or_a_bare_host_is_refused(helm: Helm, override: str, value: str) -> None:
    assert override.split(".")[1] in refusal(helm, "--set-json", f"{override}={value}")


def test_any_annotation_value_is_rendered_as_a_quoted_string(helm: Helm, tmp_path: Path) -> None:
    annotations = "{example.com/weight: 20261201, example.com/ratio: 0.5, example.com/name: edge}"
    objects = render(
        helm,
        *("--set", "ingress.gatewayAPI.enabled=false", "--set", "ingress.ingress.enabled=true"),
        *("--set", "ingress.ingress.annotations.x=true"),
        *("--values", values_file(tmp_path, f"ingress:\n  ingress:\n    annotations: {annotations}\n")),
    )
    # kubernetes-validate (in render) refuses any annotation value that is not a string.
    assert get(objects, "Ingress", "gateway")["metadata"]["annotations"] == {
        "x": "true",
        "example.com/weight": "20261201",
        "example.com/ratio": "0.5",
        "example.com/name": "edge",
    }


@pytest.mark.parametrize("retention", ["1h30m", "72h", "90m", "1.5h", "2h45m30s"])
def test_badger_retention_takes_a_go_duration(helm: Helm, retention: str) -> None:
    objects = render(
        helm, "--set", "jaeger.storage.type=badger", "--set", f"jaeger.storage.badger.retention={retention}"
    )
    config = yaml.safe_load(get(objects, "ConfigMap", "jaeger-config")["data"]["config.yaml"])
    assert config["extensions"]["jaeger_storage"]["backends"]["traces"]["badger"]["ttl"]["spans"] == retention


@pytest.mark.parametrize("retention", ["3 days", "72", "1d", "h"])
def test_badger_retention_that_is_no_go_duration_is_refused(helm: Helm, retention: str) -> None:
    assert "retention" in refusal(helm, "--set", f"jaeger.storage.badger.retention={retention}")


# --- 4. The bank never runs twice --------------------------------------------------------


@pytest.mark.parametrize("mode", ["default", "kind", "staging"])
def test_the_bank_is_recreated_and_the_others_roll(helm: Helm, mode: str) -> None:
    objects = render(helm, *values_args(mode))
    for name in SERVICES:
        strategy = get(objects, "Deployment", name)["spec"]["strategy"]
        assert strategy == {"type": "Recreate" if name == "bank" else "RollingUpdate"}, (mode, name)


def test_strategy_is_a_component_value_and_only_the_two_kinds(helm: Helm) -> None:
    objects = render(helm, "--set", "components.notifier.strategy=Recreate")
    assert get(objects, "Deployment", "notifier")["spec"]["strategy"] == {"type": "Recreate"}
    assert "strategy" in refusal(helm, "--set", "components.notifier.strategy=BlueGreen")


# --- 5. imagePullSecrets everywhere ------------------------------------------------------


@pytest.mark.parametrize("mode", ["default", "staging"])
def test_every_pod_the_chart_makes_carries_the_pull_secrets(helm: Helm, mode: str) -> None:
    objects = render(helm, *values_args(mode), "--set", "imagePullSecrets[0].name=regcred")
    pods = pod_specs(objects)
    assert "Job/lantern-smoke" in pods  # the helm test hook is among them
    if mode == "default":
        assert {"StatefulSet/rabbitmq", "StatefulSet/postgres", "Deployment/jaeger"} <= set(pods)
    for name, spec in pods.items():
        assert spec.get("imagePullSecrets") == [{"name": "regcred"}], name


def test_without_pull_secrets_no_pod_names_any(helm: Helm) -> None:
    for name, spec in pod_specs(render(helm)).items():
        assert "imagePullSecrets" not in spec, name


# --- 10. Stale images on the direct-Helm staging path; Jaeger's volume -------------------


def _lantern_containers(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Container -> pull policy, for every container running a Lantern image."""
    out = {}
    for pod, spec in pod_specs(objects).items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            if re.match(r"(.*/)?lantern[:@]", container["image"]):
                out[f"{pod}/{container['name']}"] = container["imagePullPolicy"]
    return out


def test_staging_pulls_untagged_images_always_and_tagged_ones_if_not_present(helm: Helm) -> None:
    untagged = _lantern_containers(render(helm, *values_args("staging")))
    # Services, their migrate and topology steps, and the helm test.
    assert len(untagged) >= len(SERVICES) + 1
    assert set(untagged.values()) == {"Always"}, untagged
    tagged = _lantern_containers(
        render(helm, *values_args("staging"), "--set", "components.orders.image.tag=3f2a9c1")
    )
    for container, policy in tagged.items():
        expected = "IfNotPresent" if container.startswith("Deployment/orders/") else "Always"
        assert policy == expected, container


@pytest.mark.parametrize("mode", ["default", "kind"])
def test_kind_and_the_defaults_use_loaded_images(helm: Helm, mode: str) -> None:
    """kind's nodes hold the images `kind load` put there and cannot pull them."""
    assert set(_lantern_containers(render(helm, *values_args(mode))).values()) == {"IfNotPresent"}


def test_an_unknown_pull_policy_is_refused(helm: Helm) -> None:
    assert "appVersionTagPullPolicy" in refusal(helm, "--set", "appVersionTagPullPolicy=Sometimes")


def test_jaegers_badger_volume_changes_ownership_only_on_a_root_mismatch(helm: Helm) -> None:
    badger = get(render(helm, *values_args("staging")), "Deployment", "jaeger")["spec"]["template"]["spec"]
    assert any("persistentVolumeClaim" in v for v in badger["volumes"])
    assert badger["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    memory = get(render(helm), "Deployment", "jaeger")["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in memory["volumes"])
    assert "fsGroupChangePolicy" not in memory["securityContext"]
