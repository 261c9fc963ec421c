"""A RabbitMQ node of the fault tests' own: a second Erlang node on this machine, with its own
name, ports, cookie, data and logs, that a test may stop, or kill with SIGKILL, without
touching the broker everything else on the machine shares."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.loopback import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

# Debian's /usr/sbin wrappers run as the rabbitmq user with the machine broker's cookie and
# write its startup log; the scripts behind them run as the caller, with this node's HOME.
LIBEXEC = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_script(name: str) -> str | None:
    script = LIBEXEC / name
    return str(script) if script.exists() else shutil.which(name)


def own_broker_unavailable() -> str | None:
    """None when this machine can run a RabbitMQ node of the tests' own, else why not."""
    missing = [name for name in ("rabbitmq-server", "rabbitmqctl") if rabbitmq_script(name) is None]
    return f"needs {' and '.join(missing)} (Debian's rabbitmq-server package)" if missing else None


@dataclass
class OwnRabbitMQ:
    workdir: Path
    node: str = field(default_factory=lambda: f"lantern-faults-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def vhost_url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "node.pid"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            # Its own cookie, made here on first start: no command of this node's reaches another.
            "HOME": str(self.workdir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # Not /etc/rabbitmq's files, which name the machine broker's node and plugins.
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            # No plugins: no management or Prometheus listener to clash with the machine's.
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self, timeout: float = 90.0) -> None:
        """Start the node (again, on its data, after a stop or a kill) and wait until it is up."""
        server = rabbitmq_script("rabbitmq-server")
        if server is None:
            raise RuntimeError(own_broker_unavailable())
        for name in ("mnesia", "log"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        (self.workdir / "rabbitmq-env.conf").touch()
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        self.pid_file.unlink(missing_ok=True)
        log = (self.workdir / "log" / "server.out").open("ab")
        self.process = subprocess.Popen(
            [server], env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.ctl("wait", str(self.pid_file), "--timeout", str(int(timeout)), timeout=timeout + 10)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against this node only; raises with its stderr on failure."""
        command = [rabbitmq_script("rabbitmqctl") or "rabbitmqctl", "-q", "-n", self.node, *args]
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.node} failed: {done.stderr}{done.stdout}"
            )
        return done.stdout

    def beam_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: no queue is closed, no connection told, nothing flushed
        but what RabbitMQ had already written."""
        os.kill(self.beam_pid(), signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.ctl("stop", timeout=60)
            self.process.wait(60)
        except (RuntimeError, subprocess.TimeoutExpired):
            os.kill(self.beam_pid(), signal.SIGKILL)
            self.process.wait(30)

    @contextmanager
    def vhost(self) -> Iterator[str]:
        """A new vhost on this node, deleted afterwards; yields its AMQP URL."""
        name = f"faults-{uuid.uuid4().hex[:8]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        try:
            yield self.vhost_url(name)
        finally:
            self.ctl("delete_vhost", name)

    def in_flight(self, vhost: str) -> dict[str, int]:
        """Deliveries not yet acked and publishes not yet confirmed on this vhost's channels,
        as the channels hold them now (queue statistics lag by their collection interval)."""
        listed = self.ctl(
            "list_channels", "--no-table-headers", "vhost", "messages_unacknowledged", "messages_unconfirmed"
        )
        unacked = unconfirmed = 0
        for line in listed.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0] == vhost:
                unacked += int(parts[1])
                unconfirmed += int(parts[2])
        return {"unacked": unacked, "unconfirmed": unconfirmed}


@contextmanager
def own_rabbitmq(workdir: Path) -> Iterator[OwnRabbitMQ]:
    """A node of one's own, started, for the block; stopped after it however it ends."""
    node = OwnRabbitMQ(workdir)
    started = time.monotonic()
    node.start()
    print(f"own RabbitMQ node {node.node} on port {node.port} up in {time.monotonic() - started:.1f} s")
    try:
        yield node
    finally:
        node.stop()
