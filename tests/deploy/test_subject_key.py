"""Who holds the key that signs X-Lantern-Subject: the gateway (it signs) and the components
with `trustsSubject` (orders: it acts for the caller), nobody else, in every deployment mode.
Whoever holds it can speak for any caller, so a compromised payments or bank pod must not."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

import yaml

from tests.deploy.deploy_support import Render, template_args

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}
KEY = "GATEWAY_SUBJECT_SECRET"


def _containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        pod = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield obj["metadata"]["name"], container


def holders(objects: list[dict[str, Any]]) -> set[str]:
    """The workloads with a container that gets the key, as a variable or from a Secret key."""
    out = set()
    for workload, container in _containers(objects):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef", {})
            if var["name"] == KEY or ref.get("key") == "subject-secret":
                out.add(workload)
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, f"{workload}: a whole Secret as env could hold the key"
    return out


def test_only_the_gateway_and_orders_get_the_subject_key(render: Render) -> None:
    assert holders(render.objects) == {"gateway", "orders"}, render.mode
    for name in ("gateway", "orders"):
        (env,) = [
            var
            for workload, container in _containers(render.objects)
            if workload == name
            for var in container.get("env", [])
            if var["name"] == KEY
        ]
        assert env["valueFrom"]["secretKeyRef"]["key"] == "subject-secret"


def test_a_component_marked_trusts_subject_gets_the_key_and_unmarking_orders_takes_it_away(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    def rendered(*sets: str) -> set[str]:
        args = [arg for value in sets for arg in ("--set", value)]
        return holders([o for o in yaml.safe_load_all(helm(*template_args(*args)).stdout) if o])

    assert rendered("components.payments.trustsSubject=true") == {"gateway", "orders", "payments"}
    assert rendered("components.orders.trustsSubject=false") == {"gateway"}


def test_the_schema_refuses_a_trusts_subject_that_is_not_a_boolean(
    helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = helm(*template_args("--set-string", "components.orders.trustsSubject=yes"), check=False)
    assert result.returncode != 0
    assert "trustsSubject" in result.stderr
