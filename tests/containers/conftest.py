"""Fixtures of the container tier: the real images, run as the chart's kind render runs them.

Needs a Docker engine (and, the first time, debootstrap). Without one the tier skips with its
reason, except under CI=true, where it must run and so fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.containers.images import (
    INFRA_SUITE,
    base_image,
    base_image_ref,
    build_infra_image,
    build_lantern_image,
    image_exists,
    image_size_mb,
    infra_versions,
)
from tests.containers.platform import Platform
from tests.containers.pods import Render
from tests.deploy.deploy_support import REPO_ROOT, template_args, values_args

if TYPE_CHECKING:
    from collections.abc import Iterator

IMAGE_SIZES: dict[str, float] = {}
# What the RabbitMQ and PostgreSQL stand-ins ran, as their own tools say it.
INFRA_VERSIONS: dict[str, str] = {}
# The dev loop's figures (tests/containers/test_dev_loop.py), printed at the end of the run.
DEV_LOOP: dict[str, str] = {}
# The three-node failover's figures (tests/containers/test_rabbitmq_cluster_failover.py).
FAILOVER: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    # Part of the normal run; the mark lets the scenario run alone (pytest -m rabbitmq_cluster).
    config.addinivalue_line(
        "markers", "rabbitmq_cluster: the three-node RabbitMQ failover of the container tier"
    )


def missing_engine() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    if info.returncode != 0:
        return f"no Docker engine answers: {info.stderr.strip().splitlines()[-1:]}"
    return None


def require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so the container tier must run, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine() -> None:
    require(missing_engine())


@pytest.fixture(scope="session")
def kind_render() -> Render:
    tools = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "k8s-tools.sh")], capture_output=True, text=True, timeout=300
    )
    assert tools.returncode == 0, tools.stderr
    helm = tools.stdout.strip().splitlines()[-1] + "/helm"
    out = subprocess.run(
        [helm, *template_args(*values_args("kind"))], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return Render([o for o in yaml.safe_load_all(out.stdout) if o])


@pytest.fixture(scope="session")
def images(engine: None, kind_render: Render) -> dict[str, str]:
    """Builds what the render runs: the one Lantern image (tagged as the chart names it), which
    every service runs, and the RabbitMQ and PostgreSQL stand-ins. Returns the image by workload."""
    bases = (base_image_ref(), base_image_ref(INFRA_SUITE))
    if not all(map(image_exists, bases)) and shutil.which("debootstrap") is None:
        require("no debootstrap to build the base images with (apt-get install debootstrap)")
    base = base_image()
    services: dict[str, str] = {}
    for deployment in kind_render.of_kind("Deployment"):
        ref = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        if ref.rsplit(":", 1)[0] == "lantern":
            if ref not in IMAGE_SIZES:
                build_lantern_image(base, ref)
                IMAGE_SIZES[ref] = image_size_mb(ref)
            services[deployment["metadata"]["name"]] = ref
    services["infra"] = build_infra_image(base_image(INFRA_SUITE))
    if not INFRA_VERSIONS:
        INFRA_VERSIONS.update(infra_versions(services["infra"]))
    return services


@pytest.fixture(scope="module")
def platform(
    images: dict[str, str], kind_render: Render, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    network = f"lantern-ct-{os.getpid()}"
    subprocess.run(["docker", "network", "create", network], capture_output=True, check=True, timeout=60)
    services = [name for name in images if name != "infra"]
    platform = Platform(kind_render, network, tmp_path_factory.mktemp("pods"), images["infra"], services)
    try:
        platform.start_trace_receiver(images["gateway"])
        yield platform
    finally:
        platform.remove()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if IMAGE_SIZES:
        sizes = ", ".join(f"{ref} {mb:.0f} MB" for ref, mb in sorted(IMAGE_SIZES.items()))
        terminalreporter.write_line(f"container tier: image sizes: {sizes}")
    if INFRA_VERSIONS:
        versions = f"RabbitMQ {INFRA_VERSIONS['rabbitmq']}, {INFRA_VERSIONS['postgres']}"
        terminalreporter.write_line(f"container tier: ran on {versions}")
    for figure in DEV_LOOP.values():
        terminalreporter.write_line(f"container tier: dev loop: {figure}")
    for figure in FAILOVER.values():
        terminalreporter.write_line(f"container tier: failover: {figure}")
