"""The chart's default render run with its replica counts, as a Deployment runs them.

Each replica is a pod of its own: containers named after the pod (`payments-0`, `payments-1`),
its own hostname and downward-API pod name (so its spans carry `k8s.pod.name` of its own), its
init containers run to completion first. Every replica is under its Services' names, so that
`payments` or `gateway` resolves to all of them, as a Service's endpoints do. The replicas are
entered in the platform by pod name: `platform.url("gateway-1")`, `platform.logs("orders-0")`.

The gateway's shared limiter is a Redis of the operator's, named by `redis.existingSecret`
(the chart installs none): a container from Debian's redis-server on the stand-ins' trixie
base, and the Secret an operator would create, added to the render.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lantern_runtime.trace_contract import CLIENT, PRODUCER, SERVER
from tests.containers.images import (
    INFRA_SUITE,
    base_image,
    build_infra_image,
    build_lantern_image,
    docker,
)
from tests.containers.pods import Render, container_env, init_runs, pod_run
from tests.deploy.deploy_support import REPO_ROOT, template_args

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lantern_runtime.trace_contract import Span
    from tests.containers.platform import Platform

REDIS_DIR = Path(__file__).resolve().parent / "redis"
REDIS_IMAGE = f"lantern-test-redis:{INFRA_SUITE}"
REDIS = "redis"
REDIS_SECRET = "lantern-redis"
# The render's Deployments that run the Lantern image: the five services.
LANTERN_IMAGE = "lantern"


def helm() -> str:
    """The helm the deploy checks and the tier use, fetched once into the cache."""
    tools = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "k8s-tools.sh")], capture_output=True, text=True, timeout=300
    )
    assert tools.returncode == 0, tools.stderr
    return tools.stdout.strip().splitlines()[-1] + "/helm"


def default_render(webhook_url: str | None = None) -> Render:
    """`helm template` of the chart's own values, with what an operator sets beside them: the
    Secret of a Redis for the limiter (and the egress to it), and notifier's webhook."""
    values = [
        "--set", f"redis.existingSecret={REDIS_SECRET}",
        "--set-json", 'redis.egressTo=[{"cidr": "172.16.0.0/12", "ports": [6379]}]',
    ]  # fmt: skip
    if webhook_url:
        values += ["--set-string", f"components.notifier.env.NOTIFIER_WEBHOOK_URL={webhook_url}"]
    out = subprocess.run([helm(), *template_args(*values)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    redis_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REDIS_SECRET},
        "stringData": {"url": f"redis://{REDIS}:6379/0"},
    }
    return Render([*objects, redis_secret])


def replica_counts(render: Render) -> dict[str, int]:
    """Each Lantern Deployment of the render and its `spec.replicas`."""
    return {
        d["metadata"]["name"]: int(d["spec"].get("replicas", 1))
        for d in render.of_kind("Deployment")
        if d["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[0] == LANTERN_IMAGE
    }


def build_images(render: Render) -> tuple[str, str]:
    """The one Lantern image the render names, and the stand-ins' image, as the tier builds
    them (for a run outside pytest; the tier's `images` fixture does the same)."""
    refs = {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in render.of_kind("Deployment")
        if d["metadata"]["name"] in replica_counts(render)
    }
    (ref,) = refs
    build_lantern_image(base_image(), ref)
    return ref, build_infra_image(base_image(INFRA_SUITE))


def build_redis_image() -> str:
    docker(
        "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image(INFRA_SUITE)}",
        "--tag", REDIS_IMAGE, str(REDIS_DIR), timeout=900,
    )  # fmt: skip
    return REDIS_IMAGE


def start_redis(platform: Platform, image: str) -> str:
    """Redis under its Service-like name on the platform's network; returns its container."""
    container = platform.container(REDIS)
    docker(
        "run", "--detach", "--name", container, "--network", platform.network,
        "--network-alias", REDIS, "--read-only", "--cap-drop", "ALL", image,
    )  # fmt: skip
    return container


def network_gateway(network: str) -> str:
    """The host's address on a Docker network: where its containers reach a server of the host."""
    config = json.loads(docker("network", "inspect", "--format", "{{json .IPAM.Config}}", network).stdout)
    return str(config[0]["Gateway"])


def pod_names(name: str, count: int) -> list[str]:
    return [f"{name}-{i}" for i in range(count)]


def start_pod(platform: Platform, name: str, pod: str) -> None:
    """Starts one pod of Deployment `name` as `pod`: its init containers one after the other,
    each to completion, then the service's container. Returns at once; the pod starts in a
    thread, and an init container's failure is entered in `platform.init_failures`."""
    render = platform.render
    workload = render.get("Deployment", name)
    template = workload["spec"]["template"]
    files = platform.files_dir / pod
    run = pod_run(render, workload, files)
    inits = init_runs(render, workload, files)
    labels = template["metadata"].get("labels", {})
    specs = [*template["spec"].get("initContainers", []), *template["spec"]["containers"]]
    for one, spec in zip([*inits, run], specs, strict=True):
        # What the downward API gives this pod, not the first replica's name.
        one.env = container_env(render, spec, labels, pod)
        one.args[one.args.index("--hostname") + 1] = pod
    platform.runs[pod] = run
    platform.inits[pod] = [platform.container(f"{pod}-init-{i}") for i in range(len(inits))]
    threading.Thread(target=platform.run_pod, args=(pod, inits, run), daemon=True).start()


def start_replicas(platform: Platform, counts: dict[str, int]) -> list[str]:
    """Every pod of `counts` (Deployment -> replicas), started together; returns the pods."""
    pods = [pod for name, count in counts.items() for pod in pod_names(name, count)]
    for pod in pods:
        start_pod(platform, pod.rsplit("-", 1)[0], pod)
    return pods


@dataclass(frozen=True)
class OneReplica:
    """Service URLs for the count helpers (tests.faults.conftest), which call bank and notifier
    by service: each runs one replica, pod 0."""

    platform: Platform

    def url(self, service: str) -> str:
        return self.platform.url(f"{service}-0")


def pod_of(span: Span) -> str:
    return str(span.resource.get("k8s.pod.name", "?"))


def authorize_calls_by_pod(spans: Iterable[Span], trace_ids: Iterable[str]) -> Counter[str]:
    """The bank's received authorize calls in the given traces, by the payments pod that made
    each (the pod of the client span the bank's server span is the child of)."""
    wanted = set(trace_ids)
    spans = [s for s in spans if s.trace_id in wanted]
    callers = {s.span_id: pod_of(s) for s in spans if s.service == "payments" and s.kind == CLIENT}
    return Counter(
        callers.get(s.parent_span_id or "", "unattributed")
        for s in spans
        if s.service == "bank" and s.kind == SERVER and s.name == "POST /authorizations"
    )


def publishes_by_pod(
    spans: Iterable[Span], trace_ids: Iterable[str], service: str, event_type: str
) -> Counter[str]:
    """The events of `event_type` that `service` published (its producer spans: its outbox
    relay's) in the given traces, by the pod that published each."""
    wanted = set(trace_ids)
    return Counter(
        pod_of(s)
        for s in spans
        if s.trace_id in wanted
        and s.service == service
        and s.kind == PRODUCER
        and s.attributes.get("lantern.event.type") == event_type
    )


def traces_of(spans: Iterable[Span], order_ids: Iterable[str]) -> dict[str, str]:
    """The trace of each order, by the order id orders' API span carries."""
    wanted = set(order_ids)
    return {
        str(s.attributes["lantern.order_id"]): s.trace_id
        for s in spans
        if s.service == "orders" and s.kind == SERVER and s.attributes.get("lantern.order_id") in wanted
    }


def received_by_pod(spans: Iterable[Span], trace_ids: Iterable[str], service: str, name: str) -> Counter[str]:
    """The requests `name` that `service` served in the given traces, by the pod that served each."""
    wanted = set(trace_ids)
    return Counter(
        pod_of(s)
        for s in spans
        if s.trace_id in wanted and s.service == service and s.kind == SERVER and s.name == name
    )


def psql(platform: Platform, database: str, query: str) -> str:
    user = platform.runs["postgres"].env["POSTGRES_USER"]
    argv = ["exec", platform.container("postgres"), "psql", "-U", user, "-d", database, "-tAc", query]
    return docker(*argv).stdout.strip()
