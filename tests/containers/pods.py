"""A rendered pod template turned into `docker run` arguments, as the kubelet would run it.

Only what the chart uses is translated, and anything else is refused rather than dropped:
env (values with $(VAR) references, Secret and ConfigMap keys, the downward API), envFrom,
command and args, the security context, emptyDir (as tmpfs; one that several containers of the
pod mount, as a host directory they share) and ConfigMap volumes, resource
limits, and the Services that select the pod (as network aliases: DNS names on the network).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMESPACE = "lantern"
NODE_NAME = "docker"

_REFERENCE = re.compile(r"\$\((\w+)\)|\$\$")


@dataclass(frozen=True)
class Render:
    """The objects of one `helm template`, looked up by kind and name."""

    objects: list[dict[str, Any]]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise KeyError(f"no {kind} named {name!r} in the render")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def secret_data(self, name: str) -> dict[str, str]:
        secret = self.get("Secret", name)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        return {**data, **(secret.get("stringData") or {})}

    def config_data(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data") or {})

    def aliases(self, pod_labels: dict[str, str]) -> list[str]:
        """The Services whose selector picks this pod: its names in cluster DNS."""
        return [
            s["metadata"]["name"]
            for s in self.of_kind("Service")
            if s["spec"].get("selector") and s["spec"]["selector"].items() <= pod_labels.items()
        ]


@dataclass
class PodRun:
    """Everything `docker run` needs for one container of a rendered workload."""

    name: str
    image: str
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    command: list[str] | None = None
    container_args: list[str] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    grace_seconds: int = 30
    pre_stop_sleep: int = 0

    def docker_run(self, container: str, network: str, image: str | None = None) -> list[str]:
        argv = ["docker", "run", "--detach", "--name", container, "--network", network, *self.args]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        if self.command:
            argv += ["--entrypoint", self.command[0]]
        argv.append(image or self.image)
        if self.command:
            argv += self.command[1:]
        argv += self.container_args or []
        return argv

    def probe_port(self, probe: str) -> tuple[str, int]:
        """The path and port of an httpGet probe, the port resolved by name as the kubelet does."""
        get = self.probes[probe]["httpGet"]
        port = get["port"]
        return get["path"], self.ports[port] if isinstance(port, str) else int(port)


RESTART_POLICIES = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}


def pod_run(render: Render, workload: dict[str, Any], files_dir: Path, *, stand_in: bool = False) -> PodRun:
    """The (one) container of a Deployment's or StatefulSet's pod template.

    A stand-in (RabbitMQ or PostgreSQL from Debian's packages instead of the official image)
    keeps the env, DNS names and configuration files, and runs as its package's own user with
    its data in the container, since its users and paths differ from the official image's.
    """
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    run = container_run(render, workload, container, files_dir, stand_in=stand_in)
    if not stand_in:
        # The kubelet restarts a container that exits, as its pod's restartPolicy says; Docker
        # then does too (but not after `docker stop` or `docker kill`), so a crash shows in
        # RestartCount instead of leaving a container that simply exited.
        policy = workload["spec"]["template"]["spec"].get("restartPolicy", "Always")
        run.args += ["--restart", RESTART_POLICIES[policy]]
    return run


def init_runs(render: Render, workload: dict[str, Any], files_dir: Path) -> list[PodRun]:
    """The pod's init containers, in the order the kubelet runs them (each to completion)."""
    return [
        container_run(render, workload, container, files_dir, serving=False)
        for container in workload["spec"]["template"]["spec"].get("initContainers", [])
    ]


def container_run(
    render: Render,
    workload: dict[str, Any],
    container: dict[str, Any],
    files_dir: Path,
    *,
    stand_in: bool = False,
    serving: bool = True,
) -> PodRun:
    template = workload["spec"]["template"]
    spec = template["spec"]
    labels = template["metadata"].get("labels", {})
    pod_name = f"{workload['metadata']['name']}-0"
    run = PodRun(
        name=workload["metadata"]["name"],
        image=container["image"],
        env=container_env(render, container, labels, pod_name),
        command=container.get("command"),
        container_args=container.get("args"),
        ports={p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p},
        probes={
            k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container
        },
        grace_seconds=spec.get("terminationGracePeriodSeconds", 30),
        pre_stop_sleep=container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0),
    )
    run.args += ["--hostname", pod_name]
    # A Service sends traffic only to pods that are ready, never to an init container.
    for alias in render.aliases(labels) if serving else ():
        run.args += ["--network-alias", alias]
    if not stand_in:
        run.args += security_args(spec.get("securityContext", {}), container.get("securityContext", {}))
        run.args += resource_args(container.get("resources", {}))
    run.args += volume_args(render, spec, container, files_dir / run.name, config_only=stand_in)
    return run


def container_env(
    render: Render, container: dict[str, Any], labels: dict[str, str], pod_name: str
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(render.config_data(source["configMapRef"]["name"]))
        elif "secretRef" in source:
            env.update(render.secret_data(source["secretRef"]["name"]))
        else:
            raise ValueError(f"envFrom {source} is not translated")
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": NAMESPACE,
        "spec.nodeName": NODE_NAME,
        **{f"metadata.labels['{k}']": v for k, v in labels.items()},
    }
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = _expand(entry["value"], env)
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[name] = render.secret_data(ref["name"])[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = render.config_data(ref["name"])[ref["key"]]
        elif "fieldRef" in source:
            env[name] = fields[source["fieldRef"]["fieldPath"]]
        else:
            raise ValueError(f"env {name}: {source} is not translated")
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    # Kubernetes' dependent variables: $(NAME) of a variable defined before, $$ for a dollar.
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, value)


def security_args(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    merged = {**pod, **container}
    args: list[str] = []
    if "runAsUser" in merged:
        args += ["--user", f"{merged['runAsUser']}:{merged.get('runAsGroup', merged['runAsUser'])}"]
    if "fsGroup" in pod:
        args += ["--group-add", str(pod["fsGroup"])]
    if merged.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if merged.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    capabilities = merged.get("capabilities", {})
    for cap in capabilities.get("drop", []):
        args += ["--cap-drop", cap]
    for cap in capabilities.get("add", []):
        args += ["--cap-add", cap]
    return args


def resource_args(resources: dict[str, Any]) -> list[str]:
    limits = resources.get("limits", {})
    args: list[str] = []
    if "memory" in limits:
        args += ["--memory", f"{quantity_bytes(limits['memory'])}b"]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    return args


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def volume_args(
    render: Render, spec: dict[str, Any], container: dict[str, Any], files_dir: Path, *, config_only: bool
) -> list[str]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounted = [
        m["name"]
        for c in spec.get("initContainers", []) + spec["containers"]
        for m in c.get("volumeMounts", [])
    ]
    args: list[str] = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        path = mount["mountPath"]
        if volume is None:
            if config_only:
                continue
            raise ValueError(f"mount {mount['name']} is a volume claim, which is not translated")
        if "emptyDir" in volume:
            if config_only:
                continue
            if mounted.count(mount["name"]) > 1:
                # What one container writes the next one of the pod reads, as in an emptyDir.
                shared = files_dir / f"emptyDir-{mount['name']}"
                shared.mkdir(parents=True, exist_ok=True)
                shared.chmod(0o1777)
                args += ["--volume", f"{shared}:{path}"]
                continue
            options = "rw,exec,mode=1777"
            if "sizeLimit" in volume["emptyDir"]:
                options += f",size={quantity_bytes(volume['emptyDir']['sizeLimit'])}"
            args += ["--tmpfs", f"{path}:{options}"]
        elif "configMap" in volume or "secret" in volume:
            data = (
                render.config_data(volume["configMap"]["name"])
                if "configMap" in volume
                else render.secret_data(volume["secret"]["secretName"])
            )
            target = files_dir / mount["name"]
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
            for key, text in data.items():
                (target / key).write_text(text)
                (target / key).chmod(0o644)
            source = target / mount["subPath"] if "subPath" in mount else target
            args += ["--volume", f"{source}:{path}:ro"]
        else:
            raise ValueError(f"volume {mount['name']}: {volume} is not translated")
    return args
