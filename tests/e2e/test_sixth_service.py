"""A sixth service by exactly the steps of docs/adding-a-service.md, in a copy of the repository:
`shipping`, consuming order.confirmed. It runs in the devstack beside the five, where its consumer
span joins the order's trace; it renders into the chart with its Service, Deployment, probes and
NetworkPolicy; and the copy's deploy tests and the new service's handler tests pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from devstack.loopback import free_port
from devstack.rabbitmq import fresh_vhost
from devstack.stack import Stack, chart_components
from devstack.tracesink import traces_by_id
from lantern_runtime.trace_contract import CONSUMER, Step, check_trace, order_flow_chain, render_tree
from tests.deploy.deploy_support import GATEWAY_API_VERSIONS, skaffold_schema

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

REPO_ROOT = Path(__file__).resolve().parents[2]
GUIDE = REPO_ROOT / "docs" / "adding-a-service.md"
VENV_BIN = Path(sys.executable).parent
# The guide's steps, as its first ```sh block lists them; this test runs each of them.
STEPS = [
    ".venv/bin/lantern new-service shipping --consumes order.confirmed",
    ".venv/bin/python -m pytest tests/unit/test_shipping_handlers.py tests/deploy -q",
    "make lint",
    "make run",
]


def guide_steps() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert block, f"{GUIDE} has no ```sh block of steps"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def copy_of_the_repository(target: Path) -> Path:
    """The working tree's files (tracked, and new ones not ignored), symlinks kept as links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = REPO_ROOT / name
        if not source.is_symlink() and not source.is_file():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
    return target


def run(copy: Path, command: list[str], timeout: float = 180, **env: str) -> str:
    """A command in the copy, importing the copy's apps before the installed checkout's."""
    done = subprocess.run(
        command,
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(copy / "apps"), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The copy after the guide's first step: the generator, run as the guide says."""
    assert guide_steps() == STEPS, "docs/adding-a-service.md and this test disagree on the steps"
    copy = copy_of_the_repository(tmp_path_factory.mktemp("repository"))
    run(copy, [str(VENV_BIN / "lantern"), *STEPS[0].split()[1:]])
    return copy


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "k8s-tools.sh")], capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        reason = f"no helm: scripts/k8s-tools.sh failed:\n{out.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(out.stdout.strip().splitlines()[-1]) / "helm"


def test_the_generator_wrote_what_the_guide_lists(copy: Path) -> None:
    for path in ("settings.py", "bootstrap.py", "consumers.py", "work.py", "__main__.py"):
        assert (copy / "apps" / "shipping" / path).is_file(), path
    assert not (copy / "apps" / "shipping" / "migrations").exists(), "shipping has no database"
    assert (copy / "tests" / "unit" / "test_shipping_handlers.py").is_file()
    component = yaml.safe_load((copy / "charts" / "lantern" / "values.yaml").read_text())["components"][
        "shipping"
    ]
    assert component["port"] == 8005 and component["amqp"] and not component["database"]
    assert (
        'SHIPPING_QUEUE = work_queue("shipping.order-events", "order.confirmed")'
        in (copy / "apps" / "order_flow" / "topology.py").read_text()
    )


def test_the_generator_leaves_the_one_image_as_it_is(copy: Path) -> None:
    for name in ("Dockerfile", "skaffold.yaml"):
        assert (copy / name).read_text() == (REPO_ROOT / name).read_text(), name


def test_its_handler_tests_and_the_deploy_tests_pass_in_the_copy(copy: Path) -> None:
    # Step 2, as written. The skaffold schema is the one this checkout's deploy tests use.
    try:
        schema = {"LANTERN_SKAFFOLD_SCHEMA": str(skaffold_schema())}
    except pytest.skip.Exception:
        schema = {}
    command = STEPS[1].split()
    out = run(copy, [str(VENV_BIN / "python"), *command[1:], "-p", "no:cacheprovider"], **schema)
    # The summary line, not the whole output: a skip's reason may say a download failed.
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"\d+ failed", summary), out[-2000:]


def test_make_lint_is_clean_on_what_it_wrote(copy: Path) -> None:
    # Step 3: `make lint`'s ruff half over the copy (its mypy half checks lantern_runtime and
    # lantern_cli, which the generator does not touch, and takes longer than this test may).
    for check in (["check", "apps", "tests"], ["format", "--check", "apps", "tests"]):
        run(copy, [str(VENV_BIN / "ruff"), *check])


@pytest.fixture(scope="module")
def platform(copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Step 4: `make run`'s stack of the copy (python -m devstack starts this Stack), on a vhost
    and ports of its own."""
    components = chart_components(copy / "charts" / "lantern")
    assert list(components) == ["gateway", "orders", "payments", "bank", "notifier", "shipping"]
    with fresh_vhost() as amqp_url:
        stack = Stack(
            tmp_path_factory.mktemp("platform"),
            components=components,
            ports={name: free_port() for name in components},
            amqp_url=amqp_url,
            sink_port=free_port(),
            extra_env={"OTEL_BSP_SCHEDULE_DELAY": "100", "PYTHONPATH": str(copy / "apps")},
        )
        with stack.running(timeout=60):
            yield stack


def test_shipping_runs_beside_the_five_and_joins_the_orders_trace(platform: Stack) -> None:
    assert httpx.get(f"{platform.url('shipping')}/readyz").json() == {"status": "ready"}
    with httpx.Client(
        base_url=platform.url("gateway"), timeout=10, headers=platform.auth_headers(subject="c-6")
    ) as gateway:
        response = gateway.post(
            "/api/orders",
            json={"customer_id": "c-6", "items": [{"sku": "lamp", "quantity": 1, "unit_price": "9.90"}]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 202, response.text
    trace_id = response.headers["traceresponse"].split("-")[1]
    chain = (
        *order_flow_chain("authorized"),
        Step(
            "shipping consumes order.confirmed",
            "shipping",
            CONSUMER,
            "orders publishes order.confirmed",
            "order.confirmed",
        ),
    )
    deadline = time.monotonic() + 20
    while True:
        spans = traces_by_id(platform.spans_file).get(trace_id, [])
        problems = check_trace(spans, chain)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert problems == [], render_tree(spans)
    [consumer] = [s for s in spans if s.service == "shipping"]
    # Named for where it consumed from: exchange, routing key and shipping's own queue.
    assert consumer.name.startswith("process lantern.events:order.confirmed:shipping"), consumer.name


def _render(helm: Path, copy: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            str(helm),
            "template",
            "lantern",
            str(copy / "charts" / "lantern"),
            "-n",
            "lantern",
            *GATEWAY_API_VERSIONS,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def test_the_chart_renders_its_service_deployment_probes_and_network_policy(
    copy: Path, helm_bin: Path
) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _render(helm_bin, copy)}
    service = objects["Service", "shipping"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8005]
    pod = objects["Deployment", "shipping"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    # The one Lantern image, running its module.
    assert container["image"].startswith("lantern:")
    assert container["command"] == ["python", "-m", "shipping"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # No database, so no migration; a broker, so the topology is declared before it starts.
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["topology"]
    assert "AMQP_URL" in {e["name"] for e in container["env"]}
    assert objects["ConfigMap", "shipping-config"]["data"]["PORT"] == "8005"
    policy = objects["NetworkPolicy", "allow-shipping"]["spec"]
    egress = {
        (rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], port["port"])
        for rule in policy["egress"]
        for port in rule["ports"]
    }
    assert egress == {("rabbitmq", 5672), ("otel-collector", 4317), ("otel-collector", 4318)}
    assert policy["ingress"] == [], "nothing calls shipping"
    rabbitmq_ingress = objects["NetworkPolicy", "allow-rabbitmq"]["spec"]["ingress"]
    assert "shipping" in {
        rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in rabbitmq_ingress
    }
