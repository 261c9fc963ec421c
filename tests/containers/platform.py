"""The chart's workloads as containers on one Docker network, wired only by Service names."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from lantern_runtime.trace_contract import Span
from tests.containers.images import docker
from tests.containers.pods import PodRun, Render, init_runs, pod_run

if TYPE_CHECKING:
    from pathlib import Path

SINK = "otel-collector"
SINK_FILE = "/tmp/spans.jsonl"
STAND_INS = {
    "rabbitmq": ["/usr/local/bin/rabbitmq-entrypoint.sh"],
    "postgres": ["/usr/local/bin/postgres-entrypoint.sh"],
}
# The Debian packages' own users, whose files the stand-ins' data directories are.
STAND_IN_USERS = {"rabbitmq": "rabbitmq", "postgres": "postgres"}


@dataclass
class Platform:
    render: Render
    network: str
    files_dir: Path
    infra_image: str
    services: list[str]
    runs: dict[str, PodRun] = field(default_factory=dict)
    # Each pod's init containers by workload, and why a pod's init containers failed.
    inits: dict[str, list[str]] = field(default_factory=dict)
    init_failures: dict[str, str] = field(default_factory=dict)

    def container(self, name: str) -> str:
        return f"{self.network}-{name}"

    def start_service(self, name: str) -> None:
        """Starts the pod as the kubelet does: its init containers one after the other, each to
        completion, then the service's container. Returns at once; the pod starts in a thread."""
        workload = self.render.get("Deployment", name)
        run = pod_run(self.render, workload, self.files_dir)
        self.runs[name] = run
        inits = init_runs(self.render, workload, self.files_dir)
        self.inits[name] = [self.container(f"{name}-init-{i}") for i in range(len(inits))]
        threading.Thread(target=self.run_pod, args=(name, inits, run), daemon=True).start()

    def run_pod(self, name: str, inits: list[PodRun], run: PodRun) -> None:
        """Runs pod `name`'s init containers to completion, then its container; an init
        container's failure is entered in init_failures and the pod goes no further."""
        for container, init in zip(self.inits[name], inits, strict=True):
            argv = [arg for arg in init.docker_run(container, self.network)[1:] if arg != "--detach"]
            finished = docker(*argv, timeout=900, check=False)
            if finished.returncode != 0:
                self.init_failures[name] = (
                    f"{container} exited {finished.returncode}: {finished.stderr[-1500:]}"
                )
                return
        docker(*run.docker_run(self.container(name), self.network)[1:])

    def exists(self, name: str) -> bool:
        return docker("inspect", self.container(name), check=False).returncode == 0

    def start_stand_in(self, name: str) -> None:
        run = pod_run(self.render, self.render.get("StatefulSet", name), self.files_dir, stand_in=True)
        run.command = STAND_INS[name]
        run.args += ["--user", STAND_IN_USERS[name]]
        self.runs[name] = run
        docker(*run.docker_run(self.container(name), self.network, image=self.infra_image)[1:])

    def add_rabbitmq_cluster(self, size: int) -> list[str]:
        """RabbitMQ as a StatefulSet of `size` pods runs it: node i in container rabbitmq-i with
        its own DNS name (as the headless Service gives each pod one), every node also under the
        Service's names, so that `rabbitmq` resolves to all of them; one Erlang cookie, and the
        classic peer list of the node names. Returns the nodes' names, none started yet."""
        names = [f"rabbitmq-{i}" for i in range(size)]
        conf = self.files_dir / "rabbitmq-cluster" / "40-cluster.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        peers = [f"cluster_formation.classic_config.nodes.{i} = rabbit@{n}" for i, n in enumerate(names, 1)]
        conf.write_text(
            "\n".join(
                [
                    "cluster_formation.peer_discovery_backend = classic_config",
                    *peers,
                    f"cluster_formation.target_cluster_size_hint = {size}",
                    "",
                ]
            )
        )
        conf.chmod(0o644)
        cookie = secrets.token_hex(20)
        for name in names:
            run = pod_run(
                self.render, self.render.get("StatefulSet", "rabbitmq"), self.files_dir, stand_in=True
            )
            run.command = STAND_INS["rabbitmq"]
            hostname = run.args.index("--hostname") + 1
            run.args[hostname] = name
            run.args += ["--user", STAND_IN_USERS["rabbitmq"], "--network-alias", name]
            run.args += ["--volume", f"{conf}:/etc/rabbitmq/conf.d/{conf.name}:ro"]
            run.env["RABBITMQ_ERLANG_COOKIE"] = cookie
            self.runs[name] = run
        return names

    def start_node(self, name: str) -> None:
        """Starts a node added by add_rabbitmq_cluster, or again, with its data, once killed."""
        if self.exists(name):
            docker("start", self.container(name))
            return
        docker(*self.runs[name].docker_run(self.container(name), self.network, image=self.infra_image)[1:])

    def start_trace_receiver(self, image: str) -> None:
        """An OTLP/HTTP receiver under the collector's Service name, keeping spans in a file."""
        labels = self.render.get("Deployment", SINK)["spec"]["template"]["metadata"]["labels"]
        aliases = [arg for alias in self.render.aliases(labels) for arg in ("--network-alias", alias)]
        docker(
            "run", "--detach", "--name", self.container(SINK), "--network", self.network, *aliases,
            "--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--user", "10001:10001", "--cap-drop", "ALL",
            image, "python", "-m", "devstack.tracesink",
            "--host", "0.0.0.0", "--port", "4318", "--file", SINK_FILE,
        )  # fmt: skip

    def ip(self, name: str) -> str:
        networks = json.loads(
            docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", self.container(name)).stdout
        )
        return str(networks[self.network]["IPAddress"])

    def url(self, name: str) -> str:
        return f"http://{self.ip(name)}:{self.runs[name].ports['http']}"

    def probe(self, name: str, probe: str) -> int:
        if not self.exists(name):
            return 0
        path, port = self.runs[name].probe_port(probe)
        try:
            return httpx.get(f"http://{self.ip(name)}:{port}{path}", timeout=2).status_code
        except httpx.TransportError:
            return 0

    def state(self, name: str) -> dict[str, object]:
        return self.container_state(self.container(name))

    def container_state(self, container: str) -> dict[str, object]:
        return dict(json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout))

    def restarts(self, name: str) -> int:
        return int(docker("inspect", "--format", "{{.RestartCount}}", self.container(name)).stdout)

    def wait_ready(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting and time.monotonic() < deadline and not self.init_failures:
            waiting = [n for n in waiting if self.probe(n, "readinessProbe") != 200]
            time.sleep(0.5)
        assert not self.init_failures, self.init_failures
        if waiting:
            logs = {n: self.logs(n)[-1500:] for n in waiting}
            raise AssertionError(f"not ready after {timeout} s: {waiting}\n{logs}")

    def logs(self, name: str) -> str:
        return self.container_logs(self.container(name))

    def container_logs(self, container: str) -> str:
        out = docker("logs", container, check=False)
        return out.stdout + out.stderr

    def spans(self) -> list[Span]:
        out = docker("exec", self.container(SINK), "cat", SINK_FILE, check=False).stdout
        return [Span(**json.loads(line)) for line in out.splitlines() if line.strip()]

    def remove(self) -> None:
        names = [self.container(n) for n in [*self.runs, SINK]]
        names += [init for inits in self.inits.values() for init in inits]
        docker("rm", "--force", "--volumes", *names, check=False, timeout=120)
        docker("network", "rm", self.network, check=False)
