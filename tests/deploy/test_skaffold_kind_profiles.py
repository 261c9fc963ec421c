"""On kind, skaffold forwards no ports (the NodePorts hold the host ports it would take),
and the kind-gateway-api profile keeps the Gateway API across redeploys."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.deploy.deploy_support import REPO_ROOT
from tests.deploy.test_day_two_values import get, render

if TYPE_CHECKING:
    from tests.deploy.test_day_two_values import Helm

pytestmark = pytest.mark.deploy

GATEWAY_API_VALUES = "charts/lantern/ci/kind-gateway-api-values.yaml"


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    return config


def profile(skaffold: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p for p in skaffold["profiles"] if p["name"] == name]
    return found


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON Patch operations the profiles use (RFC 6902 add and remove), as skaffold
    applies them; a path that does not exist fails, as it does in skaffold."""
    out = copy.deepcopy(config)
    for patch in patches:
        *parents, last = _pointer(patch["path"])
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if patch["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        elif patch["op"] == "add" and isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), patch["value"])
        elif patch["op"] == "add":
            target[last] = patch["value"]
        else:
            raise AssertionError(f"unexpected patch {patch}")
    return out


def kind_host_ports() -> set[int]:
    cluster = yaml.safe_load((REPO_ROOT / "k8s" / "kind-cluster.yaml").read_text())
    return {m["hostPort"] for node in cluster["nodes"] for m in node.get("extraPortMappings", [])}


def test_the_forwards_would_collide_with_kinds_host_ports(skaffold: dict[str, Any]) -> None:
    """Why the kind profile drops them: skaffold would move each to the next free port."""
    assert {f["localPort"] for f in skaffold["portForward"]} <= kind_host_ports()


def test_on_kind_skaffold_forwards_no_ports(skaffold: dict[str, Any]) -> None:
    kind = profile(skaffold, "kind")
    assert kind["activation"] == [{"kubeContext": "kind-lantern"}]
    assert "portForward" not in apply_patches(skaffold, kind["patches"])


def test_elsewhere_the_user_forwards_stay(skaffold: dict[str, Any]) -> None:
    forwards = {(f["resourceName"], f["localPort"]) for f in skaffold["portForward"]}
    assert forwards == {("gateway", 8080), ("jaeger", 16686)}


def test_the_gateway_api_profile_is_chosen_not_activated(skaffold: dict[str, Any]) -> None:
    assert "activation" not in profile(skaffold, "kind-gateway-api")


def _kind_gateway_api_release(skaffold: dict[str, Any]) -> dict[str, Any]:
    # skaffold dev -p kind-gateway-api on context kind-lantern: both profiles, in file order.
    config = skaffold
    for name in ("kind", "kind-gateway-api"):
        config = apply_patches(config, profile(skaffold, name).get("patches", []))
    (release,) = config["deploy"]["helm"]["releases"]
    return release


def test_the_gateway_api_values_come_after_the_kind_values(skaffold: dict[str, Any]) -> None:
    release = _kind_gateway_api_release(skaffold)
    assert release["valuesFiles"] == ["charts/lantern/ci/kind-values.yaml", GATEWAY_API_VALUES]
    assert (REPO_ROOT / GATEWAY_API_VALUES).is_file()


def test_kind_with_the_gateway_api_values_renders_the_route_and_keeps_the_node_ports(
    helm: Helm, skaffold: dict[str, Any]
) -> None:
    files = _kind_gateway_api_release(skaffold)["valuesFiles"]
    objects = render(helm, *(arg for f in files for arg in ("--values", str(REPO_ROOT / f))))
    gateway = get(objects, "Gateway", "lantern")
    assert gateway["spec"]["gatewayClassName"] == "eg"
    (rule,) = get(objects, "HTTPRoute", "gateway")["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "gateway", "port": 8080}]
    assert get(objects, "Service", "gateway")["spec"]["type"] == "NodePort"
    # Envoy's proxies may reach the gateway, and their X-Forwarded-For is believed.
    ingress = get(objects, "NetworkPolicy", "allow-gateway")["spec"]["ingress"]
    namespace = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}}
    }
    assert any(namespace in rule["from"] for rule in ingress)
    config = get(objects, "ConfigMap", "gateway-config")["data"]
    assert config["FORWARDED_ALLOW_IPS"] == "10.244.0.0/16"
