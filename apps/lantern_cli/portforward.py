"""A local TCP port that reaches a pod's port through the API server, as `kubectl port-forward`
does, built on the Kubernetes client's `kubernetes.stream.portforward` (a WebSocket per connection).

Each connection accepted on 127.0.0.1 gets a port-forward stream of its own, so HTTP clients
and AMQP connections work unchanged. The first stream is opened before the port is handed out:
an API server that refuses the upgrade (RBAC, a proxy, a missing pod) fails at once, in one line.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from lantern_cli.errors import Refused

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kubernetes.client import Configuration

_CHUNK = 64 * 1024


class PodPortForward:
    def __init__(self, configuration: Configuration, namespace: str, pod: str, port: int) -> None:
        # An API client of its own: `portforward` swaps the client's request function while it
        # opens a stream, which would misroute other requests made on the same client meanwhile.
        self._core = CoreV1Api(ApiClient(configuration))
        self._opening = threading.Lock()
        self.namespace, self.pod, self.port = namespace, pod, port
        self._listener: socket.socket | None = None
        self._closed = threading.Event()

    def _open(self) -> Any:
        with self._opening:
            try:
                return portforward(
                    self._core.connect_get_namespaced_pod_portforward,
                    self.pod,
                    self.namespace,
                    ports=str(self.port),
                )
            except ApiException as error:
                # The WebSocket client's reason goes on with the headers and body; the status says it.
                why = str(error.reason or error.status).split(" -+-+- ")[0]
                raise Refused(
                    f"cannot port-forward to pod {self.namespace}/{self.pod} port {self.port} "
                    f"through the API server: {why}"
                ) from error

    @contextlib.contextmanager
    def local_port(self) -> Iterator[int]:
        """A 127.0.0.1 port forwarded to the pod while the block runs."""
        self._open().close()
        listener = socket.create_server(("127.0.0.1", 0))
        self._listener = listener
        accepting = threading.Thread(target=self._accept, name=f"forward {self.pod}:{self.port}", daemon=True)
        accepting.start()
        try:
            yield int(listener.getsockname()[1])
        finally:
            self._closed.set()
            listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            stream = self._open()
        except Refused:
            client.close()
            return
        remote = stream.socket(self.port)
        remote.setblocking(True)
        back = threading.Thread(target=_pump, args=(remote, client), daemon=True)
        back.start()
        _pump(client, remote)
        back.join(timeout=5)
        stream.close()
        client.close()


def _pump(source: Any, sink: Any) -> None:
    """Copy until `source` ends, then end `sink`'s writing side."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
