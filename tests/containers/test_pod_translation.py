"""The translation of a rendered pod into `docker run` arguments, checked without Docker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.containers.pods import Render, pod_run

if TYPE_CHECKING:
    from pathlib import Path

LABELS = {"app.kubernetes.io/component": "orders", "app.kubernetes.io/version": "0.1.0"}


def deployment(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "orders"},
        "spec": {"template": {"metadata": {"labels": LABELS}, "spec": {"containers": [container], **spec}}},
    }


RENDER = Render(
    [
        {"kind": "Secret", "metadata": {"name": "creds"}, "data": {"url": "YW1xcDovL3JhYmJpdG1x"}},
        {"kind": "ConfigMap", "metadata": {"name": "orders-config"}, "data": {"PORT": "8001"}},
        {"kind": "ConfigMap", "metadata": {"name": "routes"}, "data": {"routes.json": "[]"}},
        {"kind": "Service", "metadata": {"name": "orders"}, "spec": {"selector": LABELS}},
        {"kind": "Service", "metadata": {"name": "bank"}, "spec": {"selector": {"x": "bank"}}},
    ]
)


def test_env_resolves_secrets_config_maps_the_downward_api_and_dependent_variables(tmp_path: Path) -> None:
    container = {
        "image": "lantern-orders:0.1.0",
        "envFrom": [{"configMapRef": {"name": "orders-config"}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "OTEL_SERVICE_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/component']"}},
            },
            {"name": "ATTRS", "value": "k8s.pod.name=$(POD_NAME),cost=$$5,$(UNKNOWN)"},
            {"name": "AMQP_URL", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "url"}}},
        ],
    }
    run = pod_run(RENDER, deployment(container), tmp_path)
    assert run.env == {
        "PORT": "8001",
        "POD_NAME": "orders-0",
        "OTEL_SERVICE_NAME": "orders",
        "ATTRS": "k8s.pod.name=orders-0,cost=$5,$(UNKNOWN)",
        "AMQP_URL": "amqp://rabbitmq",
    }


def test_security_context_limits_volumes_and_service_names_become_docker_arguments(tmp_path: Path) -> None:
    container = {
        "image": "lantern-orders:0.1.0",
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "routes", "mountPath": "/etc/routes"},
            {"name": "routes", "mountPath": "/etc/app/routes.json", "subPath": "routes.json"},
        ],
    }
    run = pod_run(
        RENDER,
        deployment(
            container,
            securityContext={"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
            volumes=[
                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "routes", "configMap": {"name": "routes"}},
            ],
        ),
        tmp_path,
    )
    argv = run.docker_run("c", "net")
    joined = " ".join(argv)
    for expected in (
        "--network-alias orders",
        "--user 10001:10001",
        "--group-add 10001",
        "--read-only",
        "--restart always",
        "--security-opt no-new-privileges",
        "--cap-drop ALL",
        f"--memory {256 * 2**20}b",
        "--cpus 0.5",
        f"--tmpfs /tmp:rw,exec,mode=1777,size={256 * 2**20}",
        f"--volume {tmp_path}/orders/routes:/etc/routes:ro",
        f"--volume {tmp_path}/orders/routes/routes.json:/etc/app/routes.json:ro",
    ):
        assert expected in joined
    assert "bank" not in joined
    assert (tmp_path / "orders" / "routes" / "routes.json").read_text() == "[]"


def test_what_is_not_translated_is_refused_rather_than_dropped(tmp_path: Path) -> None:
    container = {
        "image": "x",
        "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
    }
    with pytest.raises(ValueError, match="not translated"):
        pod_run(RENDER, deployment(container), tmp_path)
