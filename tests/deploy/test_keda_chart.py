"""KEDA, off by default: a ScaledObject per consumer with autoscaling.keda.enabled, scaling its
Deployment on its own work queue's ready messages through a broker user that may do nothing
else, never beside the component's CPU HPA. Checked against tests/deploy/keda_schemas.py (no
KEDA CRD is at hand offline)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

from order_flow.topology import ORDER_FLOW
from tests.deploy.deploy_support import chart_components
from tests.deploy.keda_schemas import KEDA_SCHEMAS
from tests.deploy.test_network_policy import allowed_flows, expected_flows
from tests.deploy.test_rabbitmq_cluster_chart import refusal, render_with

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from tests.deploy.deploy_support import Render

    Helm = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.deploy

# The components with work queues: those KEDA may scale.
CONSUMERS = sorted({spec.owner for spec in ORDER_FLOW.queues})
KEDA = {
    name: {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 5,
        "readyMessagesPerReplica": 40,
        "pollingInterval": 10,
        "cooldownPeriod": 120,
    }
    for name in CONSUMERS
}


def with_keda(keda: dict[str, dict[str, Any]] = KEDA, **values: Any) -> dict[str, Any]:
    return {
        "components": {name: {"autoscaling": {"keda": settings}} for name, settings in keda.items()},
        **values,
    }


@pytest.fixture(scope="session")
def scaled(helm: Helm) -> Render:
    return render_with(helm, with_keda(), "keda")


def test_the_values_name_each_consumers_own_work_queue() -> None:
    owned = {spec.owner: spec.name for spec in ORDER_FLOW.queues}
    keda = {
        name: c["autoscaling"]["keda"] for name, c in chart_components().items() if "keda" in c["autoscaling"]
    }
    # The order flow's three, and any service `lantern new-service` added that consumes.
    assert set(keda) == set(CONSUMERS) >= {"notifier", "orders", "payments"}
    assert {name: settings["queue"] for name, settings in keda.items()} == owned
    assert not [name for name, settings in keda.items() if settings["enabled"]]


def test_by_default_nothing_of_keda_is_rendered(renders: dict[str, Render]) -> None:
    for render in renders.values():
        assert not [o for o in render.objects if o["apiVersion"].startswith("keda.sh/")], render.mode
        definitions = (
            json.loads(render.get("Secret", "rabbitmq-credentials")["stringData"]["definitions.json"])
            if render.values["rabbitmq"]["enabled"]
            else {"users": []}
        )
        assert "keda" not in {user["name"] for user in definitions["users"]}


def test_each_consumer_scales_on_its_work_queues_ready_messages(scaled: Render) -> None:
    objects = {o["metadata"]["name"]: o for o in scaled.of_kind("ScaledObject")}
    assert sorted(objects) == CONSUMERS
    owned = {spec.owner: spec.name for spec in ORDER_FLOW.queues}
    for name, obj in objects.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        jsonschema.validate(spec, KEDA_SCHEMAS["ScaledObject"])
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
        assert spec["pollingInterval"] == 10
        # cooldownPeriod counts only on the way to zero; the HPA's window is the cool-down above one.
        assert spec["cooldownPeriod"] == 120
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 120
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "rabbitmq"
        # amqp: a passive declare, whose message count is the ready messages.
        assert trigger["metadata"] == {
            "protocol": "amqp",
            "queueName": owned[name],
            "mode": "QueueLength",
            "value": "40",
        }
        assert trigger["authenticationRef"] == {"name": "rabbitmq-keda"}
        # KEDA's HPA owns the replica count.
        assert "replicas" not in scaled.get("Deployment", name)["spec"]
    assert not scaled.of_kind("HorizontalPodAutoscaler")


def test_keda_reads_queue_depths_as_a_broker_user_that_may_do_nothing(scaled: Render) -> None:
    auth = scaled.get("TriggerAuthentication", "rabbitmq-keda")
    jsonschema.validate(auth["spec"], KEDA_SCHEMAS["TriggerAuthentication"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "rabbitmq-credentials", "key": "keda-url"}
    ]
    data = scaled.get("Secret", "rabbitmq-credentials")["stringData"]
    password = data["keda-password"]
    assert data["keda-url"] == f"amqp://keda:{password}@rabbitmq:5672/"
    definitions = json.loads(data["definitions.json"])
    assert {"name": "keda", "password": password, "tags": []} in definitions["users"]
    (granted,) = [p for p in definitions["permissions"] if p["user"] == "keda"]
    assert (granted["configure"], granted["write"], granted["read"]) == ("^$", "^$", "^$")
    assert not [t for t in definitions["topic_permissions"] if t["user"] == "keda"]
    # No service reads it.
    for name in chart_components():
        container = scaled.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        keys = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert "keda-url" not in keys, name


def test_keda_s_operator_may_reach_the_broker_and_nothing_else(scaled: Render) -> None:
    allowed = allowed_flows(scaled)
    assert allowed == expected_flows(scaled)
    from_keda = {f for f in allowed if f[0] == "ns:keda"}
    assert from_keda == {("ns:keda", "rabbitmq", 5672, "TCP")}


def test_with_an_external_broker_the_url_comes_from_its_secret(helm: Helm) -> None:
    render = render_with(
        helm, with_keda(rabbitmq={"enabled": False, "external": {"existingSecret": "lantern-amqp"}})
    )
    auth = render.get("TriggerAuthentication", "rabbitmq-keda")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "lantern-amqp", "key": "keda-url"}
    ]
    assert not [f for f in allowed_flows(render) if f[0] == "ns:keda"]


def test_one_consumer_alone_gets_its_scaled_object(helm: Helm) -> None:
    render = render_with(helm, with_keda({"payments": {"enabled": True}}))
    assert [o["metadata"]["name"] for o in render.of_kind("ScaledObject")] == ["payments"]
    assert render.get("Deployment", "orders")["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        (
            {"components": {"payments": {"autoscaling": {"enabled": True, "keda": {"enabled": True}}}}},
            "components.payments: autoscaling.enabled (an HPA on CPU) and autoscaling.keda.enabled",
        ),
        (
            with_keda({"payments": {"enabled": True, "queue": "orders.payment-results"}}),
            'autoscaling.keda.queue is "orders.payment-results": it must be one of payments\'s own',
        ),
        (
            with_keda({"payments": {"enabled": True, "minReplicas": 4, "maxReplicas": 3}}),
            "minReplicas 4 is above maxReplicas 3",
        ),
        (
            with_keda({"payments": {"minReplicas": 0}}),
            "at '/components/payments/autoscaling/keda/minReplicas'",
        ),
        (
            with_keda({"payments": {"readyMessagesPerReplica": 0}}),
            "at '/components/payments/autoscaling/keda/readyMessagesPerReplica'",
        ),
        (with_keda({"payments": {"mode": "MessageRate"}}), "additional properties 'mode' not allowed"),
        ({"keda": {"operatorNamespace": "KEDA"}}, "at '/keda/operatorNamespace'"),
    ],
)
def test_keda_values_that_cannot_work_are_refused_naming_them(
    helm: Helm, overrides: dict[str, Any], complaint: str
) -> None:
    assert complaint in refusal(helm, overrides)
