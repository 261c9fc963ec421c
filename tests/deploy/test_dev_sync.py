"""`skaffold dev` syncs an edited .py file into the running pods, which reload it: the chart's
devSync, switched on by skaffold's dev-sync profile for `skaffold dev` alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.deploy.deploy_support import REPO_ROOT, SERVICES, values_args
from tests.deploy.test_day_two_values import get, render
from tests.deploy.test_skaffold_kind_profiles import apply_patches, profile

if TYPE_CHECKING:
    from tests.deploy.test_day_two_values import Helm

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    return config


def test_the_artifact_syncs_python_files_to_where_the_image_keeps_the_code(skaffold: dict[str, Any]) -> None:
    (artifact,) = skaffold["build"]["artifacts"]
    assert artifact["sync"] == {
        "manual": [{"src": "apps/**/*.py", "dest": "/opt/lantern/apps", "strip": "apps/"}]
    }
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "PYTHONPATH=/opt/lantern/apps" in dockerfile


def test_only_skaffold_dev_switches_dev_sync_on(skaffold: dict[str, Any]) -> None:
    dev = profile(skaffold, "dev-sync")
    assert dev["activation"] == [{"command": "dev"}]
    patched = apply_patches(skaffold, dev["patches"])
    (release,) = patched["deploy"]["helm"]["releases"]
    assert release["setValues"]["devSync.enabled"] is True
    (unpatched,) = skaffold["deploy"]["helm"]["releases"]
    assert "devSync.enabled" not in unpatched["setValues"]
    staging = profile(skaffold, "staging")["deploy"]["helm"]["releases"][0]
    assert "devSync.enabled" not in staging["setValues"]


def test_dev_sync_runs_the_code_from_a_writable_copy_and_reloads(helm: Helm) -> None:
    objects = render(helm, *values_args("kind"), "--set", "devSync.enabled=true")
    for name in SERVICES:
        spec = get(objects, "Deployment", name)["spec"]["template"]["spec"]
        seed = spec["initContainers"][0]
        assert seed["name"] == "code"
        assert seed["command"] == ["cp", "-R", "--preserve=mode,timestamps", "/opt/lantern/apps", "/code/"]
        assert seed["image"] == spec["containers"][0]["image"]
        (container,) = spec["containers"]
        assert {"name": "LANTERN_RELOAD", "value": "true"} in container["env"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["code"] == "/opt/lantern"
        assert {"name": "code", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
        # Writable code, but the root filesystem stays read-only and the user non-root.
        assert spec["securityContext"]["runAsNonRoot"] is True
        for step in (seed, container):
            assert step["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("mode", ["default", "kind", "staging"])
def test_without_dev_sync_no_pod_reloads_or_has_writable_code(helm: Helm, mode: str) -> None:
    objects = render(helm, *values_args(mode))
    for name in SERVICES:
        spec = get(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert "code" not in [c["name"] for c in spec.get("initContainers", [])]
        (container,) = spec["containers"]
        assert "LANTERN_RELOAD" not in [e["name"] for e in container["env"]]
        assert "code" not in [v["name"] for v in spec["volumes"]]


def test_a_component_may_still_name_its_own_image(helm: Helm) -> None:
    objects = render(
        helm,
        "--set", "image.tag=abc",
        "--set", "components.bank.image.repository=registry.example.com/bank",
    )  # fmt: skip
    bank = get(objects, "Deployment", "bank")["spec"]["template"]["spec"]["containers"][0]
    orders = get(objects, "Deployment", "orders")["spec"]["template"]["spec"]
    assert bank["image"] == "registry.example.com/bank:abc"
    assert bank["command"] == ["python", "-m", "bank"]
    assert {c["image"] for c in orders["initContainers"] + orders["containers"]} == {"lantern:abc"}
