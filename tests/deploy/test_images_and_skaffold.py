"""The Dockerfile builds one pinned, non-root image for every service, and skaffold.yaml
wires it into the chart."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import yaml

from tests.deploy.deploy_support import CHART, REPO_ROOT, SERVICES, Render, skaffold_schema, template_args

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.deploy

DEFAULT_BASE_IMAGE = "python:3.11.14-slim-bookworm"
# An exact version tag: digits and dots, optionally a variant such as -slim-bookworm.
PINNED_TAG = re.compile(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?$")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def global_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults: only these may
    appear in a FROM line."""
    args = {}
    for keyword, rest in _instructions(path):
        if keyword == "FROM":
            break
        assert keyword == "ARG", f"{keyword} before the first FROM"
        name, _, default = rest.partition("=")
        args[name] = default.strip("\"'")
    return args


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages, each base with the global ARGs' defaults substituted, as a build
    without --build-arg sees them."""
    args = global_args(path)
    stages: list[Stage] = []
    for keyword, rest in _instructions(path):
        if keyword == "FROM":
            match = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, f"unreadable FROM: {rest}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], match.group(1))
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=base))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse_dockerfile(REPO_ROOT / "Dockerfile")}


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())


def _effective_user(stage: Stage, stages: dict[str, Stage]) -> str | None:
    users = [arg for keyword, arg in stage.instructions if keyword == "USER"]
    if users:
        return users[-1]
    return _effective_user(stages[stage.base], stages) if stage.base in stages else None


def test_every_base_image_is_pinned(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        if stage.base in stages:  # built on an earlier stage
            continue
        image, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert image, f"{stage.name}: {stage.base} has no tag"
        assert PINNED_TAG.match(tag), f"{stage.name}: {stage.base} is not an exact version tag"


def test_the_one_image_runs_as_a_numeric_non_root_user_and_each_pod_its_own_module(
    stages: dict[str, Stage], renders: dict[str, Render]
) -> None:
    final = list(stages.values())[-1]
    assert final.name == "lantern"
    user = _effective_user(final, stages)
    assert user, "the image runs as root"
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user} is not numeric"
    assert int(uid) != 0, f"USER {user} is root"
    for service in SERVICES:
        (container,) = renders["default"].get("Deployment", service)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", service]
        assert container["image"].startswith("lantern:")


def test_the_only_image_pulled_is_the_default_base() -> None:
    """A build with no --build-arg pulls the official Python image and nothing else:
    no BuildKit frontend (a `# syntax=` directive pulls one from Docker Hub), no
    `COPY --from=<image>`, no `RUN --mount=from=<image>`."""
    path = REPO_ROOT / "Dockerfile"
    for line in path.read_text().splitlines():
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), f"parser directive: {line}"
    assert global_args(path) == {"BASE_IMAGE": DEFAULT_BASE_IMAGE}
    stages = parse_dockerfile(path)
    names = {s.name for s in stages}
    pulled = {s.base for s in stages if s.base not in names}
    for stage in stages:
        for _, rest in stage.instructions:
            for source in re.findall(r"--(?:mount=\S*\b)?from=([^\s,]+)", rest):
                if source not in names:
                    pulled.add(source)
    assert pulled == {DEFAULT_BASE_IMAGE}


def test_dependencies_come_from_the_lock_and_the_code_is_the_last_layer(stages: dict[str, Stage]) -> None:
    builder = [f"{keyword} {arg}" for keyword, arg in stages["builder"].instructions]
    (install,) = [s for s in builder if "pip install" in s]
    assert "--require-hashes --no-deps -r /tmp/requirements.lock" in install
    assert "pip uninstall --yes pip setuptools" in install
    assert not any(s.startswith("COPY apps/") for s in builder), "code in the dependencies' stage"
    code = [f"{keyword} {arg}" for keyword, arg in stages["code"].instructions]
    assert code == ["COPY apps/ /opt/lantern/apps/", "RUN python -m compileall -q /opt/lantern/apps"]
    layers = [(k, a) for k, a in stages["lantern"].instructions if k in ("COPY", "RUN", "ADD")]
    assert layers[-1] == ("COPY", "--from=code /opt/lantern/apps /opt/lantern/apps")
    assert layers[-2] == ("COPY", "--from=builder /opt/venv /opt/venv")


def test_runtime_stage_is_lean_and_read_only_friendly(stages: dict[str, Stage]) -> None:
    runtime = dict(stages["lantern"].instructions)
    text = " ".join(f"{k} {v}" for k, v in stages["lantern"].instructions)
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime["ENV"]
    assert "PYTHONPATH=/opt/lantern/apps" in runtime["ENV"]
    assert "HOME=/tmp" in runtime["ENV"]
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    for compiler in ("gcc", "build-essential", "apt-get install"):
        assert compiler not in text


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") + 1 : lines.index("*") + 3] == ["!requirements.lock", "!apps/"]


def test_skaffold_config_matches_the_published_schema(skaffold: dict[str, Any]) -> None:
    schema = json.loads(skaffold_schema().read_text())
    jsonschema.Draft7Validator(schema).validate(skaffold)
    assert skaffold["apiVersion"] == "skaffold/v4beta14"


def _artifact_lists(skaffold: dict[str, Any]) -> list[list[dict[str, Any]]]:
    lists = [skaffold["build"]["artifacts"]]
    lists += [p["build"]["artifacts"] for p in skaffold["profiles"] if "artifacts" in p.get("build", {})]
    return lists


def test_every_profile_builds_the_one_image(skaffold: dict[str, Any]) -> None:
    for artifacts in _artifact_lists(skaffold):
        (artifact,) = artifacts
        assert artifact["image"] == "lantern"
        context = REPO_ROOT / artifact.get("context", ".")
        assert (context / artifact["docker"]["dockerfile"]).is_file()
        # The last stage, the image every Deployment runs.
        assert "target" not in artifact["docker"]


def _releases(skaffold: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [("top level", r) for r in skaffold["deploy"]["helm"]["releases"]]
    for profile in skaffold["profiles"]:
        for release in profile.get("deploy", {}).get("helm", {}).get("releases", []):
            out.append((profile["name"], release))
    return out


def test_set_value_templates_set_every_image(skaffold: dict[str, Any], renders: dict[str, Render]) -> None:
    components = renders["default"].values["components"]
    for where, release in _releases(skaffold):
        assert (REPO_ROOT / release["chartPath"]).resolve() == CHART
        for values_file in release.get("valuesFiles", []):
            assert (REPO_ROOT / values_file).is_file(), f"{where}: {values_file} is missing"
        assert release["setValueTemplates"] == {
            "image.repository": "{{.IMAGE_REPO_lantern}}",
            "image.tag": "{{.IMAGE_TAG_lantern}}@{{.IMAGE_DIGEST_lantern}}",
        }, where
        # No component names an image of its own: all run the one skaffold sets.
        assert not any("image" in components[service] for service in SERVICES), where
        assert release["setValues"]["imageRegistry"] == ""


def test_profiles_kind_by_default_and_staging_pushes(skaffold: dict[str, Any]) -> None:
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert skaffold["build"]["local"]["push"] is False
    (top,) = skaffold["deploy"]["helm"]["releases"]
    assert top["valuesFiles"] == ["charts/lantern/ci/kind-values.yaml"]
    assert profiles["kind"]["activation"] == [{"kubeContext": "kind-lantern"}]
    assert profiles["staging"]["build"]["local"]["push"] is True
    (staging,) = profiles["staging"]["deploy"]["helm"]["releases"]
    assert staging["valuesFiles"] == ["charts/lantern/ci/staging-values.yaml"]
    kind_cluster = yaml.safe_load((REPO_ROOT / "k8s" / "kind-cluster.yaml").read_text())
    assert f"kind-{kind_cluster['name']}" == "kind-lantern"


def test_status_check_tolerates_start_up_restarts_until_a_deadline(
    skaffold: dict[str, Any], renders: dict[str, Render]
) -> None:
    """The services may restart while the broker and database come up; skaffold waits for
    the deadline instead of failing on the first restart, in every profile that deploys.
    The deadline holds a service's full wait (STARTUP_TIMEOUT), a restart and a second
    wait, so one that cannot connect has exited with its reason in the log before
    skaffold gives up."""
    startup_timeout = int(renders["kind"].values["shared"]["env"]["STARTUP_TIMEOUT"])
    deploys = [("top level", skaffold["deploy"])]
    deploys += [(p["name"], p["deploy"]) for p in skaffold["profiles"] if "deploy" in p]
    for where, deploy in deploys:
        assert deploy["tolerateFailuresUntilDeadline"] is True, where
        assert deploy["statusCheckDeadlineSeconds"] >= 2 * startup_timeout, where
        assert deploy.get("statusCheck", True) is True, where


def test_port_forwards_reach_gateway_and_jaeger_ui(
    skaffold: dict[str, Any], renders: dict[str, Render]
) -> None:
    forwards = {(f["resourceName"], f["port"], f["localPort"]) for f in skaffold["portForward"]}
    assert forwards == {("gateway", 8080, 8080), ("jaeger", 16686, 16686)}
    for name, port, _ in forwards:
        assert port in [p["port"] for p in renders["default"].get("Service", name)["spec"]["ports"]]


@pytest.mark.parametrize(
    ("repository", "tag", "image"),
    [
        # Skaffold, image loaded into kind: no digest, so the template leaves "TAG@".
        ("lantern-orders", "3f2a9c1@", "lantern-orders:3f2a9c1"),
        # Skaffold, image pushed: tag and digest.
        (
            "registry.example.com/lantern/lantern-orders",
            "3f2a9c1@sha256:" + "a" * 64,
            "registry.example.com/lantern/lantern-orders:3f2a9c1@sha256:" + "a" * 64,
        ),
    ],
)
def test_skaffold_image_values_become_valid_references(helm, repository: str, tag: str, image: str) -> None:
    args = template_args(
        "--set",
        f"components.orders.image.repository={repository}",
        "--set",
        f"components.orders.image.tag={tag}",
    )
    objects = [o for o in yaml.safe_load_all(helm(*args).stdout) if o]
    (orders,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "orders"]
    pod = orders["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == image
    assert re.fullmatch(
        r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?",
        pod["metadata"]["labels"]["app.kubernetes.io/version"],
    )
