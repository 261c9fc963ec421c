"""The chart's RabbitMQ as one node (the default, rendered as before) or as a cluster of 3, 5 or
7 (rabbitmq.replicas): peer discovery through the headless Service, one Erlang cookie, a
PodDisruptionBudget, nodes apart, inter-node traffic between the broker's pods only, and quorum
queues created with a replica count that fits the cluster."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import pytest
import yaml

from lantern_runtime.messaging.declare import build_parser
from tests.deploy.deploy_support import NAMESPACE, WITH_BROKER, Render, merged_values, template_args
from tests.deploy.test_network_policy import allowed_flows, expected_flows

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    Helm = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.deploy

K8S_VERSION = "1.34.0"
INTER_NODE = {4369, 25672, "35672-35682"}
API_SERVER = "10.96.0.1/32"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def render_with(helm: Helm, overrides: dict[str, Any], mode: str = "override") -> Render:
    """The chart with these values over its defaults, every built-in object validated."""
    result = helm(*template_args(*set_json(overrides)))
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    for obj in objects:
        if not obj["apiVersion"].startswith(("gateway.networking.k8s.io/", "keda.sh/")):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    return Render(mode, objects, merge(merged_values("default"), overrides))


def set_json(overrides: dict[str, Any]) -> list[str]:
    return [arg for path, value in flat(overrides) for arg in ("--set-json", f"{path}={json.dumps(value)}")]


def flat(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out += flat(value, f"{path}.") if isinstance(value, dict) and value else [(path, value)]
    return out


def refusal(helm: Helm, overrides: dict[str, Any]) -> str:
    result = helm(*template_args(*set_json(overrides)), check=False)
    assert result.returncode != 0, f"{overrides} was accepted"
    return result.stderr


def three_nodes(**rabbitmq: Any) -> dict[str, Any]:
    return {"rabbitmq": {"replicas": 3, **rabbitmq}}


def rabbitmq_conf(render: Render) -> dict[str, str]:
    text = render.get("ConfigMap", "rabbitmq-config")["data"]["30-lantern.conf"]
    return dict(line.split(" = ", 1) for line in text.splitlines())


def plugins(render: Render) -> set[str]:
    text = render.get("ConfigMap", "rabbitmq-config")["data"]["enabled_plugins"].strip()
    return set(text.removeprefix("[").removesuffix("].").split(","))


def pod(render: Render) -> dict[str, Any]:
    spec: dict[str, Any] = render.get("StatefulSet", "rabbitmq")["spec"]["template"]["spec"]
    return spec


def group_size_env(render: Render) -> dict[str, str | None]:
    """Each AMQP component's topology step: the QUORUM_INITIAL_GROUP_SIZE it runs with."""
    out = {}
    for name in WITH_BROKER:
        spec = render.get("Deployment", name)["spec"]["template"]["spec"]
        (topology,) = [c for c in spec["initContainers"] if c["name"] == "topology"]
        env = {e["name"]: e.get("value") for e in topology["env"]}
        out[name] = env.get("QUORUM_INITIAL_GROUP_SIZE")
    return out


@pytest.fixture(scope="session")
def cluster(helm: Helm) -> Render:
    return render_with(helm, three_nodes(), "three nodes")


def test_by_default_one_node_is_rendered_as_before(renders: dict[str, Render]) -> None:
    render = renders["default"]
    statefulset = render.get("StatefulSet", "rabbitmq")["spec"]
    assert statefulset["replicas"] == 1
    assert "podManagementPolicy" not in statefulset
    assert plugins(render) == {"rabbitmq_management", "rabbitmq_prometheus"}
    assert not [key for key in rabbitmq_conf(render) if key.startswith(("cluster_", "quorum_queue."))]
    kinds_named_rabbitmq = {
        (o["kind"], o["metadata"]["name"]) for o in render.objects if "rabbitmq" in o["metadata"]["name"]
    }
    assert kinds_named_rabbitmq == {
        ("Secret", "rabbitmq-credentials"),
        ("ConfigMap", "rabbitmq-config"),
        ("StatefulSet", "rabbitmq"),
        ("Service", "rabbitmq"),
        ("Service", "rabbitmq-headless"),
        ("NetworkPolicy", "allow-rabbitmq"),
    }
    spec = pod(render)
    assert spec["automountServiceAccountToken"] is False
    assert "initContainers" not in spec and "affinity" not in spec
    assert "env" not in spec["containers"][0]
    # RabbitMQ's own default replica count: nothing passed to the topology step.
    assert set(group_size_env(render).values()) == {None}


def test_three_nodes_discover_each_other_through_the_headless_service(cluster: Render) -> None:
    statefulset = cluster.get("StatefulSet", "rabbitmq")["spec"]
    assert statefulset["replicas"] == 3
    # A restarted cluster node waits for its peers before it is ready: one at a time would never
    # start the second.
    assert statefulset["podManagementPolicy"] == "Parallel"
    assert "rabbitmq_peer_discovery_k8s" in plugins(cluster)
    conf = rabbitmq_conf(cluster)
    assert conf["cluster_formation.peer_discovery_backend"] == "k8s"
    assert conf["cluster_formation.k8s.address_type"] == "hostname"
    headless = cluster.get("Service", statefulset["serviceName"])
    assert conf["cluster_formation.k8s.service_name"] == headless["metadata"]["name"] == "rabbitmq-headless"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} == {5672, 4369, 25672}
    # Each node's name is its pod's DNS name under the headless Service, which is what the
    # plugin makes of a peer's hostname and the suffix.
    (container,) = pod(cluster)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RABBITMQ_USE_LONGNAME"]["value"] == "true"
    assert env["RABBITMQ_NODENAME"]["value"] == "rabbit@$(POD_NAME).rabbitmq-headless.$(POD_NAMESPACE)"
    assert conf["cluster_formation.k8s.hostname_suffix"] == f".rabbitmq-headless.{NAMESPACE}"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert {p["containerPort"] for p in container["ports"]} >= {4369, 25672}
    # Clients keep one name that reaches every node.
    assert cluster.get("Service", "rabbitmq")["spec"]["selector"] == headless["spec"]["selector"]


def test_every_node_gets_the_one_erlang_cookie_as_a_file_only_rabbitmq_reads(cluster: Render) -> None:
    secret = cluster.get("Secret", "rabbitmq-erlang-cookie")
    assert len(secret["stringData"]["cookie"]) >= 32
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    spec = pod(cluster)
    volume = next(v for v in spec["volumes"] if v["name"] == "erlang-cookie")
    assert volume["secret"]["secretName"] == "rabbitmq-erlang-cookie"
    (init,) = spec["initContainers"]
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    assert mounts == {"/var/lib/rabbitmq": "data", "/cookie": "erlang-cookie"}
    script = init["command"][-1]
    assert "cp /cookie/cookie /var/lib/rabbitmq/.erlang.cookie" in script
    # Erlang refuses a cookie file others may read.
    assert script.endswith("chmod 0400 /var/lib/rabbitmq/.erlang.cookie")
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_cluster_keeps_a_majority_through_disruptions_and_spreads_over_nodes(cluster: Render) -> None:
    budget = cluster.get("PodDisruptionBudget", "rabbitmq")["spec"]
    labels = cluster.get("StatefulSet", "rabbitmq")["spec"]["template"]["metadata"]["labels"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    (preferred,) = pod(cluster)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()


def test_required_anti_affinity_leaves_a_node_pending_rather_than_beside_another(helm: Helm) -> None:
    render = render_with(helm, three_nodes(antiAffinity="required"))
    anti = pod(render)["affinity"]["podAntiAffinity"]
    assert list(anti) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    assert (
        anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    )


def test_only_the_brokers_pods_reach_each_others_inter_node_ports(cluster: Render) -> None:
    allowed = allowed_flows(cluster)
    assert allowed == expected_flows(cluster)
    inter_node = {f for f in allowed if f[2] in INTER_NODE}
    assert inter_node == {("rabbitmq", "rabbitmq", port, "TCP") for port in INTER_NODE}


def test_rabbitmq_4_1_and_later_discover_peers_without_the_kubernetes_api(cluster: Render) -> None:
    assert cluster.get("ServiceAccount", "rabbitmq")["automountServiceAccountToken"] is False
    spec = pod(cluster)
    assert spec["serviceAccountName"] == "rabbitmq"
    assert spec["automountServiceAccountToken"] is False
    assert not [o for o in cluster.objects if o["metadata"]["name"] == "rabbitmq-peer-discovery"]
    assert not [f for f in allowed_flows(cluster) if f[0] == "rabbitmq" and f[1].startswith("cidr:")]


def test_rabbitmq_before_4_1_may_read_the_headless_services_endpoints_and_nothing_else(helm: Helm) -> None:
    render = render_with(
        helm,
        {
            **three_nodes(image={"repository": "rabbitmq", "tag": "4.0.5-management"}),
            "networkPolicy": {"kubeAPIServer": {"cidrs": [API_SERVER], "ports": [443]}},
        },
    )
    assert pod(render)["automountServiceAccountToken"] is True
    (rule,) = render.get("Role", "rabbitmq-peer-discovery")["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["endpoints"],
        "resourceNames": ["rabbitmq-headless"],
        "verbs": ["get"],
    }
    binding = render.get("RoleBinding", "rabbitmq-peer-discovery")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rabbitmq", "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == "rabbitmq-peer-discovery"
    allowed = allowed_flows(render)
    assert allowed == expected_flows(render)
    assert ("rabbitmq", f"cidr:{API_SERVER}", 443, "TCP") in allowed


def test_rabbitmq_before_4_1_without_the_api_servers_address_is_refused_naming_it(helm: Helm) -> None:
    stderr = refusal(helm, three_nodes(image={"repository": "rabbitmq", "tag": "4.0.5-management"}))
    assert "set networkPolicy.kubeAPIServer.cidrs" in stderr
    assert "RabbitMQ 4.1 or later" in stderr


@pytest.mark.parametrize(
    ("rabbitmq", "expected"),
    [
        ({"replicas": 3}, "3"),
        ({"replicas": 5}, "5"),
        # More replicas than 5 make every publish wait on more nodes for no majority gained.
        ({"replicas": 7}, "5"),
        ({"replicas": 5, "quorumInitialGroupSize": 3}, "3"),
        ({"replicas": 1, "quorumInitialGroupSize": 1}, "1"),
    ],
)
def test_quorum_queues_are_created_with_a_replica_count_that_fits_the_cluster(
    helm: Helm, rabbitmq: dict[str, Any], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    render = render_with(helm, {"rabbitmq": rabbitmq})
    assert set(group_size_env(render).values()) == {expected}
    if rabbitmq["replicas"] > 1:
        conf = rabbitmq_conf(render)
        # Queues created while a node was away, or before the others joined, grow to it.
        assert conf["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
        assert conf["quorum_queue.continuous_membership_reconciliation.target_group_size"] == expected
    # As the topology step reads it.
    monkeypatch.setenv("QUORUM_INITIAL_GROUP_SIZE", expected)
    assert build_parser().parse_args(["payments"]).quorum_initial_group_size == int(expected)


def test_an_external_cluster_gets_the_group_size_it_is_given_and_otherwise_rabbitmqs_own(helm: Helm) -> None:
    external = {"enabled": False, "external": {"existingSecret": "lantern-amqp"}}
    assert set(group_size_env(render_with(helm, {"rabbitmq": external})).values()) == {None}
    given = render_with(helm, {"rabbitmq": {**external, "quorumInitialGroupSize": 3}})
    assert set(group_size_env(given).values()) == {"3"}


@pytest.mark.parametrize(
    ("rabbitmq", "complaint"),
    [
        # Two nodes cannot lose one, four no more than three: RabbitMQ advises odd counts.
        ({"replicas": 2}, "at '/rabbitmq/replicas': value must be one of 1, 3, 5, 7"),
        ({"replicas": 4}, "at '/rabbitmq/replicas': value must be one of 1, 3, 5, 7"),
        ({"replicas": 9}, "at '/rabbitmq/replicas': value must be one of 1, 3, 5, 7"),
        ({"quorumInitialGroupSize": 0}, "/rabbitmq/quorumInitialGroupSize"),
        ({"antiAffinity": "hard"}, "at '/rabbitmq/antiAffinity'"),
        (
            {"replicas": 3, "quorumInitialGroupSize": 5},
            "rabbitmq.quorumInitialGroupSize is 5 but rabbitmq.replicas is 3",
        ),
    ],
)
def test_cluster_values_that_cannot_work_are_refused_naming_them(
    helm: Helm, rabbitmq: dict[str, Any], complaint: str
) -> None:
    assert complaint in refusal(helm, {"rabbitmq": rabbitmq})
