"""The NetworkPolicies allow exactly Lantern's flows, no more and no fewer.

The allowed flows are computed from the rendered policies the way Kubernetes
reads them: a pod selected by any policy of a type is isolated for that type and
then gets the union of those policies' rules. A flow between two pods of the
release needs egress at the source and ingress at the destination. Peers that
are not pods of the release are named by token: `ns:NAME`, `cidr:RANGE`, `dns`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import SERVICES, Render, merged_values, template_args

pytestmark = pytest.mark.deploy

Flow = tuple[str, str, int | str, str]  # source, destination, port, protocol


def _pods(render: Render) -> dict[str, dict[str, str]]:
    """Component name -> pod labels, for every workload in the render."""
    pods = {}
    for obj in render.objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            pods[labels["app.kubernetes.io/component"]] = labels
    return pods


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peers(peer_list: list[dict[str, Any]] | None, pods: dict[str, dict[str, str]]) -> set[str]:
    if not peer_list:
        return {"*"}
    out: set[str] = set()
    for peer in peer_list:
        if "ipBlock" in peer:
            assert "except" not in peer["ipBlock"]
            out.add(f"cidr:{peer['ipBlock']['cidr']}")
        elif "namespaceSelector" in peer:
            labels = peer["namespaceSelector"]["matchLabels"]
            namespace = labels["kubernetes.io/metadata.name"]
            pod_labels = peer.get("podSelector", {}).get("matchLabels", {})
            if namespace == "kube-system" and pod_labels == {"k8s-app": "kube-dns"}:
                out.add("dns")
            else:
                assert not pod_labels, f"unexpected peer {peer}"
                out.add(f"ns:{namespace}")
        else:
            out |= {name for name, labels in pods.items() if _selects(peer["podSelector"], labels)}
    return out


def _ports(port_list: list[dict[str, Any]] | None) -> set[tuple[int | str, str]]:
    if not port_list:
        return {("*", "*")}
    # A range (endPort) is one token, "35672-35682".
    return {
        (f"{p['port']}-{p['endPort']}" if "endPort" in p else p["port"], p.get("protocol", "TCP"))
        for p in port_list
    }


def allowed_flows(render: Render) -> set[Flow]:
    pods = _pods(render)
    egress: set[Flow] = set()
    ingress: set[Flow] = set()
    isolated_egress: set[str] = set()
    isolated_ingress: set[str] = set()
    for policy in render.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        selected = [name for name, labels in pods.items() if _selects(spec["podSelector"], labels)]
        types = spec["policyTypes"]
        for pod in selected:
            if "Egress" in types:
                isolated_egress.add(pod)
                for rule in spec.get("egress") or []:
                    for peer in _peers(rule.get("to"), pods):
                        egress |= {(pod, peer, port, proto) for port, proto in _ports(rule.get("ports"))}
            if "Ingress" in types:
                isolated_ingress.add(pod)
                for rule in spec.get("ingress") or []:
                    for peer in _peers(rule.get("from"), pods):
                        ingress |= {(peer, pod, port, proto) for port, proto in _ports(rule.get("ports"))}
    # Default deny must cover every pod in both directions, or the sets below mean nothing.
    assert isolated_egress == set(pods)
    assert isolated_ingress == set(pods)

    internal_egress = {f for f in egress if f[1] in pods}
    internal_ingress = {f for f in ingress if f[0] in pods}
    # Both sides agree: no half-open grants that a later edit could silently complete.
    assert internal_egress == internal_ingress, internal_egress ^ internal_ingress
    return egress | ingress


def expected_flows(render: Render) -> set[Flow]:
    values = render.values
    pods = _pods(render)
    flows: set[Flow] = set()

    def tcp(source: str, destination: str, *ports: int) -> None:
        flows.update((source, destination, port, "TCP") for port in ports)

    # The gateway reaches what its route table names: by default orders:8001 only.
    for route in values["edge"]["routes"]:
        tcp("gateway", route["service"], route["port"])
    # What each component declares it calls; the reference flow's own is pinned below.
    for app in SERVICES:
        for callee in values["components"][app]["calls"]:
            tcp(app, callee, values["components"][callee]["port"])
    for app in SERVICES:
        tcp(app, "otel-collector", 4317, 4318)
    tcp("otel-collector", "jaeger", 4317, 4318)
    # A RabbitMQ cluster's nodes: epmd, distribution and the CLI tools' range, among themselves.
    rabbitmq = values["rabbitmq"]
    if rabbitmq["enabled"] and rabbitmq["replicas"] > 1:
        flows.update(("rabbitmq", "rabbitmq", port, "TCP") for port in (4369, 25672, "35672-35682"))
        # Peer discovery before RabbitMQ 4.1 reads the headless Service's endpoints from the API.
        if tuple(map(int, rabbitmq["image"]["tag"].split("-")[0].split(".")[:2])) < (4, 1):
            for cidr in values["networkPolicy"]["kubeAPIServer"]["cidrs"]:
                tcp("rabbitmq", f"cidr:{cidr}", *values["networkPolicy"]["kubeAPIServer"]["ports"])
    keda = [
        app for app in SERVICES if values["components"][app]["autoscaling"].get("keda", {}).get("enabled")
    ]
    if keda and rabbitmq["enabled"]:
        tcp(f"ns:{values['keda']['operatorNamespace']}", "rabbitmq", 5672)
    tcp("smoke-test", "gateway", 8080)
    tcp("smoke-test", "jaeger", 16686)
    api_server = values["networkPolicy"]["kubeAPIServer"]
    for cidr in api_server["cidrs"]:
        tcp("otel-collector", f"cidr:{cidr}", *api_server["ports"])

    for backend, port, flag in (("rabbitmq", 5672, "amqp"), ("postgres", 5432, "database")):
        for app in (name for name in SERVICES if values["components"][name][flag]):
            if values[backend]["enabled"]:
                tcp(app, backend, port)
            else:
                for rule in values[backend]["external"]["egressTo"]:
                    tcp(app, f"cidr:{rule['cidr']}", *rule["ports"])
    if values["auth"]["jwksUrl"]:
        for rule in values["auth"]["jwksEgressTo"]:
            tcp("gateway", f"cidr:{rule['cidr']}", *rule["ports"])
    if values["redis"]["existingSecret"]:
        for rule in values["redis"]["egressTo"]:
            tcp("gateway", f"cidr:{rule['cidr']}", *rule["ports"])

    if values["ingress"]["gatewayAPI"]["enabled"] or values["ingress"]["ingress"]["enabled"]:
        tcp(f"ns:{values['networkPolicy']['ingressControllerNamespace']}", "gateway", 8080)
    for cidr in values["networkPolicy"]["nodePortSources"]:
        tcp(f"cidr:{cidr}", "gateway", 8080)
        tcp(f"cidr:{cidr}", "jaeger", 16686)
    if values["networkPolicy"]["metricsScraperNamespace"]:
        tcp(f"ns:{values['networkPolicy']['metricsScraperNamespace']}", "otel-collector", 8889)
        if values["rabbitmq"]["enabled"]:
            tcp(f"ns:{values['networkPolicy']['metricsScraperNamespace']}", "rabbitmq", 15692)
    # The chart's Prometheus scrapes the collector's exporter and RabbitMQ's endpoint, and
    # Jaeger's Monitor tab queries it; else Jaeger reaches the Prometheus it is given.
    if values["prometheus"]["enabled"]:
        tcp("prometheus", "otel-collector", 8889)
        if values["rabbitmq"]["enabled"]:
            tcp("prometheus", "rabbitmq", 15692)
        tcp("jaeger", "prometheus", 9090)
        for rule in values["prometheus"]["alerting"]["egressTo"]:
            tcp("prometheus", f"cidr:{rule['cidr']}", *rule["ports"])
    if values["jaeger"]["monitor"]["prometheusUrl"]:
        for rule in values["jaeger"]["monitor"]["egressTo"]:
            tcp("jaeger", f"cidr:{rule['cidr']}", *rule["ports"])
    for app in SERVICES:
        for rule in values["components"][app]["egressTo"]:
            tcp(app, f"cidr:{rule['cidr']}", *rule["ports"])

    for pod in pods:
        flows.add((pod, "dns", 53, "UDP"))
        flows.add((pod, "dns", 53, "TCP"))
    return flows


def test_policies_allow_exactly_the_lantern_flows(render: Render) -> None:
    allowed = allowed_flows(render)
    expected = expected_flows(render)
    assert allowed == expected, (
        f"{render.mode}: unexpected {sorted(map(str, allowed - expected))}, "
        f"missing {sorted(map(str, expected - allowed))}"
    )


def test_the_reference_flow_calls_only_bank_from_payments(renders: dict[str, Render]) -> None:
    """Calls between services, in every mode: payments -> bank and nothing else (the gateway's
    come from its routes). A new service's `calls` adds to this, never a hand-written rule."""
    for render in renders.values():
        reference = ("gateway", "orders", "payments", "bank", "notifier")
        calls = {(app, callee) for app in reference for callee in render.values["components"][app]["calls"]}
        assert calls == {("payments", "bank")}, render.mode
        assert ("payments", "bank", 8003, "TCP") in allowed_flows(render)


def test_a_component_may_call_only_a_component(helm) -> None:
    result = helm(*template_args("--set", "components.payments.calls[0]=bnk"), check=False)
    assert result.returncode != 0
    assert 'components.payments.calls names "bnk", which is not a component' in result.stderr


def test_notifier_webhook_egress_comes_from_values(helm) -> None:
    args = template_args(
        "--set",
        "components.notifier.egressTo[0].cidr=203.0.113.0/24",
        "--set",
        "components.notifier.egressTo[0].ports[0]=443",
    )
    objects = [o for o in yaml.safe_load_all(helm(*args).stdout) if o]
    values = merged_values("default")
    values["components"]["notifier"]["egressTo"] = [{"cidr": "203.0.113.0/24", "ports": [443]}]
    render = Render("webhook", objects, values)
    assert ("notifier", "cidr:203.0.113.0/24", 443, "TCP") in allowed_flows(render)
    assert allowed_flows(render) == expected_flows(render)


def test_a_new_route_opens_exactly_its_flow_from_the_gateway(helm) -> None:
    notifications = {
        "prefix": "/api/notifications",
        "service": "notifier",
        "port": 8004,
        "scopes": {"GET": ["notifications:read"]},
    }
    values = merged_values("default")
    values["edge"]["routes"] = [*values["edge"]["routes"], notifications]
    args = template_args("--set-json", f"edge.routes={json.dumps(values['edge']['routes'])}")
    objects = [o for o in yaml.safe_load_all(helm(*args).stdout) if o]
    render = Render("notifications-route", objects, values)
    allowed = allowed_flows(render)
    assert ("gateway", "notifier", 8004, "TCP") in allowed
    assert allowed == expected_flows(render)


def test_staging_opens_the_identity_provider_and_redis_to_the_gateway_only(
    renders: dict[str, Render],
) -> None:
    staging = renders["staging"]
    allowed = allowed_flows(staging)
    for section, rules in (
        ("auth", staging.values["auth"]["jwksEgressTo"]),
        ("redis", staging.values["redis"]["egressTo"]),
    ):
        assert rules, f"staging values should exercise {section} egress"
        for rule in rules:
            sources = {f[0] for f in allowed if f[1] == f"cidr:{rule['cidr']}"}
            assert sources == {"gateway"}, f"{section}: {rule['cidr']} is open to {sources}"


def test_no_pod_may_send_everywhere(render: Render) -> None:
    """Egress outside the release goes to named CIDRs only; the collector's reaches the
    API server's addresses and nothing else outside the cluster."""
    allowed = allowed_flows(render)
    everywhere = {"cidr:0.0.0.0/0", "cidr:::/0", "*"}
    assert not [f for f in allowed if f[1] in everywhere], render.mode
    api_server = render.values["networkPolicy"]["kubeAPIServer"]
    collector_out = {(f[1], f[2]) for f in allowed if f[0] == "otel-collector" and f[1].startswith("cidr:")}
    assert collector_out == {(f"cidr:{c}", port) for c in api_server["cidrs"] for port in api_server["ports"]}
