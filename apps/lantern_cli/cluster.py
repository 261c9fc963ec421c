"""A Helm release of charts/lantern, read through the Kubernetes API.

The cluster is chosen as kubectl chooses it: the kubeconfig at $KUBECONFIG (or ~/.kube/config)
and its current context, or `--context`; inside a pod without a kubeconfig, the pod's service
account. The release's objects are those labelled `app.kubernetes.io/instance=<release>`, as
the chart labels them. Jaeger, RabbitMQ and the gateway are reached through port-forwards
opened here; credentials are read from the Secrets the Deployments' environment names, so the
generated Secrets (kind) and the ones given in staging values are found alike.
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from kubernetes.client import ApiClient, AppsV1Api, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, list_kube_config_contexts, load_kube_config
from kubernetes.config.incluster_config import load_incluster_config
from urllib3.exceptions import HTTPError

from lantern_cli.errors import Refused
from lantern_cli.portforward import PodPortForward
from lantern_cli.targets import ComponentState, TokenKey

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kubernetes.client import V1Container, V1Pod

INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
# Waiting reasons that mean the container cannot run, not that it is about to.
STUCK = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def connect(context: str | None) -> tuple[Configuration, str | None]:
    """The client configuration and the context's namespace, if it names one."""
    configuration = Configuration()
    path = _kubeconfig()
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
    if context is None and in_pod and not any(Path(p).exists() for p in path.split(os.pathsep)):
        load_incluster_config(client_configuration=configuration)
        namespace = (
            SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() else None
        )
        return configuration, namespace
    try:
        contexts, current = list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError) as error:
        raise Refused(f"cannot read the kubeconfig {path}: {error}") from error
    chosen = next((c for c in contexts if c["name"] == (context or (current or {}).get("name"))), None)
    if chosen is None:
        names = ", ".join(c["name"] for c in contexts) or "none"
        wanted = f"no context {context!r}" if context else "no current context"
        raise Refused(f"{wanted} in the kubeconfig {path}; its contexts: {names}")
    try:
        load_kube_config(config_file=path, context=chosen["name"], client_configuration=configuration)
    except ConfigException as error:
        raise Refused(f"context {chosen['name']!r} of {path} is unusable: {error}") from error
    return configuration, chosen.get("context", {}).get("namespace")


class Cluster:
    def __init__(self, configuration: Configuration, namespace: str, release: str) -> None:
        self.configuration, self.namespace, self.release = configuration, namespace, release
        client = ApiClient(configuration)
        self.apps, self.core = AppsV1Api(client), CoreV1Api(client)
        self.description = f"release {release} in namespace {namespace} ({configuration.host})"
        workloads = self._workloads()
        if not workloads:
            raise Refused(
                f"no release {release!r} in namespace {namespace!r}: nothing there is labelled "
                f"{INSTANCE}={release} (pass --namespace and --release; `helm list -A` lists releases)"
            )

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as error:
            host = self.configuration.host
            raise Refused(
                f"the API server at {host} refused to {what}: {error.status} {error.reason}"
            ) from error
        except HTTPError as error:
            raise Refused(f"the API server at {self.configuration.host} is unreachable: {error}") from error

    def _workloads(self) -> list[Any]:
        selector = f"{INSTANCE}={self.release}"
        listed = [
            self._call(
                "list Deployments",
                self.apps.list_namespaced_deployment,
                self.namespace,
                label_selector=selector,
            ),
            self._call(
                "list StatefulSets",
                self.apps.list_namespaced_stateful_set,
                self.namespace,
                label_selector=selector,
            ),
        ]
        return [item for workloads in listed for item in workloads.items]

    def _pods(self, match_labels: dict[str, str]) -> list[V1Pod]:
        selector = ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))
        pods = self._call("list pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        return list(pods.items)

    def components(self) -> list[ComponentState]:
        states = []
        for workload in sorted(self._workloads(), key=lambda w: (w.kind or "", w.metadata.name)):
            labels = workload.metadata.labels or {}
            desired = 1 if workload.spec.replicas is None else workload.spec.replicas
            ready = (workload.status.ready_replicas if workload.status else None) or 0
            pods = self._pods(workload.spec.selector.match_labels or {})
            statuses = [s for pod in pods for s in ((pod.status and pod.status.container_statuses) or [])]
            stuck = sorted(
                {str(s.state.waiting.reason) for s in statuses if s.state and s.state.waiting} & STUCK
            )
            images = sorted({c.image for c in workload.spec.template.spec.containers if c.image})
            states.append(
                ComponentState(
                    name=labels.get(COMPONENT, workload.metadata.name),
                    desired=desired,
                    ready=ready,
                    healthy=ready >= desired and not stuck,
                    restarts=sum(s.restart_count for s in statuses),
                    last_reason=stuck[0] if stuck else _last_termination(statuses),
                    image=", ".join(images),
                    note=f"{len(pods)} pod(s)",
                )
            )
        return states

    def _workload(self, component: str) -> Any:
        for workload in self._workloads():
            if (workload.metadata.labels or {}).get(COMPONENT) == component:
                return workload
        raise Refused(f"release {self.release!r} in {self.namespace!r} has no {component} component")

    def _ready_pod(self, match_labels: dict[str, str], what: str) -> V1Pod:
        for pod in self._pods(match_labels):
            conditions = pod.status.conditions or [] if pod.status else []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                return pod
        raise Refused(f"no ready pod of {what} in namespace {self.namespace!r}")

    @contextlib.contextmanager
    def _forward(self, service_name: str, port: int) -> Iterator[int]:
        """A local port reaching `port` of Service `service_name`, through one of its ready pods."""
        service = self._call(
            f"read Service {service_name}", self.core.read_namespaced_service, service_name, self.namespace
        )
        pod = self._ready_pod(service.spec.selector or {}, f"Service {service_name}")
        target = next((p.target_port for p in service.spec.ports or [] if p.port == port), None) or port
        if isinstance(target, str):
            containers = pod.spec.containers if pod.spec else []
            named = [p for c in containers for p in (c.ports or []) if p.name == target]
            if not named:
                raise Refused(f"pod {_name(pod)} has no port named {target!r} (Service {service_name})")
            target = named[0].container_port
        forward = PodPortForward(self.configuration, self.namespace, _name(pod), int(target))
        with forward.local_port() as local:
            yield local

    @contextlib.contextmanager
    def broker(self) -> Iterator[str]:
        url = self._env_of(self._any_with("AMQP_URL"), ["AMQP_URL"]).get("AMQP_URL")
        if not url:
            raise Refused(f"no component of release {self.release!r} has an AMQP_URL")
        parts = urlsplit(url)
        service = self._service_named_by(parts.hostname or "")
        if service is None:
            yield url  # a broker outside the cluster, reached directly
            return
        with self._forward(service, parts.port or 5672) as local:
            credentials = parts.netloc.rpartition("@")[0]
            netloc = f"{credentials}@127.0.0.1:{local}" if credentials else f"127.0.0.1:{local}"
            yield urlunsplit(parts._replace(netloc=netloc))

    def _service_named_by(self, host: str) -> str | None:
        """The Service of this namespace that `host` names (rabbitmq, rabbitmq.NS.svc, ...), if any."""
        labels = host.split(".")
        if not (
            len(labels) == 1
            or host.endswith((".svc", ".svc.cluster.local"))
            or labels[1:] == [self.namespace]
        ):
            return None
        try:
            self.core.read_namespaced_service(labels[0], self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None  # e.g. localhost: not a Service, so not in the cluster
            raise Refused(
                f"cannot read Service {self.namespace}/{labels[0]}: {error.status} {error.reason}"
            ) from error
        return labels[0]

    @contextlib.contextmanager
    def trace_query(self) -> Iterator[str]:
        with self._forward("jaeger", 16686) as local:
            yield f"http://127.0.0.1:{local}"

    @contextlib.contextmanager
    def gateway(self) -> Iterator[str]:
        with self._forward("gateway", 8080) as local:
            yield f"http://127.0.0.1:{local}"

    def token_key(self) -> TokenKey:
        names = ["GATEWAY_JWKS_URL", "GATEWAY_JWT_SECRET", "GATEWAY_JWT_ISSUER", "GATEWAY_JWT_AUDIENCE"]
        env = self._env_of(self._workload("gateway").spec.template.spec.containers[0], names)
        if env.get("GATEWAY_JWKS_URL"):
            raise Refused(
                f"the gateway of release {self.release!r} checks tokens against "
                f"GATEWAY_JWKS_URL={env['GATEWAY_JWKS_URL']}; ask that identity provider for a token"
            )
        if not env.get("GATEWAY_JWT_SECRET"):
            raise Refused(f"the gateway of release {self.release!r} has no GATEWAY_JWT_SECRET to sign with")
        return TokenKey(
            env["GATEWAY_JWT_SECRET"], env.get("GATEWAY_JWT_ISSUER"), env.get("GATEWAY_JWT_AUDIENCE")
        )

    def _any_with(self, name: str) -> V1Container:
        for workload in self._workloads():
            containers: list[V1Container] = workload.spec.template.spec.containers
            for container in containers:
                if any(var.name == name for var in container.env or []):
                    return container
        raise Refused(f"no component of release {self.release!r} sets {name}")

    def _env_of(self, container: V1Container, names: list[str]) -> dict[str, str]:
        """The values `names` take in `container`: from env (literal, Secret or ConfigMap key),
        else from the ConfigMaps and Secrets of its envFrom."""
        found: dict[str, str] = {}
        for source in container.env_from or []:
            if source.config_map_ref:
                data = self._config_map(
                    str(source.config_map_ref.name), optional=bool(source.config_map_ref.optional)
                )
            elif source.secret_ref:
                data = self._secret(str(source.secret_ref.name))
            else:
                continue
            prefix = source.prefix or ""
            found.update({prefix + key: value for key, value in data.items() if prefix + key in names})
        for var in container.env or []:
            if var.name not in names:
                continue
            if var.value is not None:
                found[var.name] = var.value
            elif var.value_from and var.value_from.secret_key_ref:
                key = var.value_from.secret_key_ref
                found[var.name] = self._secret(str(key.name))[key.key]
            elif var.value_from and var.value_from.config_map_key_ref:
                entry = var.value_from.config_map_key_ref
                found[var.name] = self._config_map(str(entry.name))[entry.key]
        return found

    def _config_map(self, name: str, *, optional: bool = False) -> dict[str, str]:
        try:
            return dict(self.core.read_namespaced_config_map(name, self.namespace).data or {})
        except ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise Refused(
                f"cannot read ConfigMap {self.namespace}/{name}: {error.status} {error.reason}"
            ) from error

    def _secret(self, name: str) -> dict[str, str]:
        secret = self._call(f"read Secret {name}", self.core.read_namespaced_secret, name, self.namespace)
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def _name(pod: V1Pod) -> str:
    return str(pod.metadata.name if pod.metadata else "")


def _last_termination(statuses: list[Any]) -> str | None:
    ended = [
        s.last_state.terminated for s in statuses if s.last_state and s.last_state.terminated is not None
    ]
    if not ended:
        return None
    latest = max(ended, key=lambda t: (t.finished_at is not None, t.finished_at or 0))
    return str(latest.reason or f"exit {latest.exit_code}")
