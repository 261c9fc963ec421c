"""The chart's workloads as containers on one Docker network, wired only by Service names."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from lantern_runtime.trace_contract import Span
from tests.containers.images import docker
from tests.containers.pods import PodRun, Render, pod_run

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

    def container(self, name: str) -> str:
        return f"{self.network}-{name}"

    def start_service(self, name: str) -> None:
        run = pod_run(self.render, self.render.get("Deployment", name), self.files_dir)
        self.runs[name] = run
        docker(*run.docker_run(self.container(name), self.network)[1:])

    def start_stand_in(self, name: str) -> None:
        run = pod_run(self.render, self.render.get("StatefulSet", name), self.files_dir, stand_in=True)
        run.command = STAND_INS[name]
        run.args += ["--user", STAND_IN_USERS[name]]
        self.runs[name] = run
        docker(*run.docker_run(self.container(name), self.network, image=self.infra_image)[1:])

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
        path, port = self.runs[name].probe_port(probe)
        try:
            return httpx.get(f"http://{self.ip(name)}:{port}{path}", timeout=2).status_code
        except httpx.TransportError:
            return 0

    def state(self, name: str) -> dict[str, object]:
        return dict(json.loads(docker("inspect", "--format", "{{json .State}}", self.container(name)).stdout))

    def restarts(self, name: str) -> int:
        return int(docker("inspect", "--format", "{{.RestartCount}}", self.container(name)).stdout)

    def wait_ready(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting and time.monotonic() < deadline:
            waiting = [n for n in waiting if self.probe(n, "readinessProbe") != 200]
            time.sleep(0.5)
        if waiting:
            logs = {n: self.logs(n)[-1500:] for n in waiting}
            raise AssertionError(f"not ready after {timeout} s: {waiting}\n{logs}")

    def logs(self, name: str) -> str:
        out = docker("logs", self.container(name), check=False)
        return out.stdout + out.stderr

    def spans(self) -> list[Span]:
        out = docker("exec", self.container(SINK), "cat", SINK_FILE, check=False).stdout
        return [Span(**json.loads(line)) for line in out.splitlines() if line.strip()]

    def remove(self) -> None:
        names = [self.container(n) for n in [*self.runs, SINK]]
        docker("rm", "--force", "--volumes", *names, check=False, timeout=120)
        docker("network", "rm", self.network, check=False)
