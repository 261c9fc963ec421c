"""The DNS peers are a value (kube-dns by default, NodeLocal DNSCache's link-local address
when on), and cert-manager's HTTP-01 solver pods are reachable from the ingress controller
whenever cert-manager issues the certificate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.deploy.deploy_support import values_args
from tests.deploy.test_day_two_values import get, refusal, render

if TYPE_CHECKING:
    from tests.deploy.test_day_two_values import Helm

pytestmark = pytest.mark.deploy

DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
SOLVER = {"acme.cert-manager.io/http01-solver": "true"}
GATEWAY_ISSUER = (
    *("--set", "ingress.gatewayAPI.hostname=shop.example.com"),
    *("--set", "ingress.gatewayAPI.tls.enabled=true"),
    *("--set", "ingress.gatewayAPI.tls.secretName=shop-tls"),
    *("--set", "ingress.gatewayAPI.tls.certManagerIssuer=letsencrypt"),
)


def dns_rule(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = get(objects, "NetworkPolicy", "allow-dns")["spec"]["egress"]
    return rule


def test_dns_goes_to_kube_dns_only_by_default(helm: Helm) -> None:
    rule = dns_rule(render(helm))
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert rule["ports"] == DNS_PORTS


@pytest.mark.parametrize(
    ("address", "cidr"), [("169.254.20.10", "169.254.20.10/32"), ("fd00::10", "fd00::10/128")]
)
def test_node_local_dns_adds_its_address_on_port_53(helm: Helm, address: str, cidr: str) -> None:
    rule = dns_rule(
        render(
            helm,
            *("--set", "networkPolicy.dns.nodeLocalDNS.enabled=true"),
            *("--set", f"networkPolicy.dns.nodeLocalDNS.address={address}"),
        )
    )
    assert {"ipBlock": {"cidr": cidr}} in rule["to"]
    assert any("podSelector" in peer for peer in rule["to"])  # kube-dns stays, for its misses
    assert rule["ports"] == DNS_PORTS


def test_the_cluster_dns_selectors_are_values(helm: Helm) -> None:
    rule = dns_rule(
        render(
            helm,
            "--set-json",
            'networkPolicy.dns.namespaceSelector={"kubernetes.io/metadata.name": "dns-system"}',
            "--set-json",
            # Helm merges maps into the default: null drops its k8s-app.
            'networkPolicy.dns.podSelector={"k8s-app": null, "app.kubernetes.io/name": "coredns"}',
        )
    )
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "coredns"}},
        }
    ]


def test_a_node_local_address_that_is_no_ip_is_refused(helm: Helm) -> None:
    assert "address" in refusal(helm, "--set", "networkPolicy.dns.nodeLocalDNS.address=node-local.dns")


def solver_policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"].get("matchLabels") == SOLVER
    ]


@pytest.mark.parametrize("mode", ["default", "kind", "staging"])
def test_no_solver_allowance_without_cert_manager(helm: Helm, mode: str) -> None:
    assert solver_policies(render(helm, *values_args(mode))) == []


def test_a_gateway_certificate_from_cert_manager_opens_the_solver_to_the_gateway_controller(
    helm: Helm,
) -> None:
    (policy,) = solver_policies(render(helm, *GATEWAY_ISSUER))
    spec = policy["spec"]
    # Only ingress: the solver sends nothing, and no chart pod carries the solver label.
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}
                    }
                }
            ],
            "ports": [{"protocol": "TCP", "port": 8089}],
        }
    ]


def test_an_ingress_certificate_opens_the_solver_to_that_controllers_namespace(helm: Helm) -> None:
    (policy,) = solver_policies(
        render(
            helm,
            *("--set", "ingress.gatewayAPI.enabled=false", "--set", "ingress.ingress.enabled=true"),
            *(
                "--set",
                "ingress.ingress.tls.enabled=true",
                "--set",
                "ingress.ingress.tls.secretName=shop-tls",
            ),
            *("--set", "ingress.ingress.tls.certManagerIssuer=letsencrypt"),
            *("--set", "networkPolicy.ingressControllerNamespace=ingress-nginx"),
        )
    )
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


def test_the_solvers_peers_are_a_value_and_it_can_be_switched_on_alone(helm: Helm) -> None:
    peers = '[{"ipBlock": {"cidr": "10.64.0.0/14"}}]'
    (policy,) = solver_policies(
        render(
            helm,
            *("--set", "networkPolicy.acmeHttp01Solver.enabled=true"),
            *("--set-json", f"networkPolicy.acmeHttp01Solver.from={peers}"),
        )
    )
    (rule,) = policy["spec"]["ingress"]
    assert rule == {
        "from": [{"ipBlock": {"cidr": "10.64.0.0/14"}}],
        "ports": [{"protocol": "TCP", "port": 8089}],
    }


def test_without_network_policies_there_is_no_solver_policy_either(helm: Helm) -> None:
    objects = render(helm, *GATEWAY_ISSUER, "--set", "networkPolicy.enabled=false")
    assert [o for o in objects if o["kind"] == "NetworkPolicy"] == []
