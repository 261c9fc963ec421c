"""RabbitMQ vhosts of their own, for test and benchmark runs that must not see each other's
queues (or those of `make run`), and a user per service with only its own permissions."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

RABBITMQ_HOST = os.environ.get("LANTERN_TEST_RABBITMQ", "localhost:5672")


def rabbitmqctl(*args: str) -> str:
    """Run RabbitMQ's admin tool; it fails now and then when other clients use it at the same
    moment, so it is tried three times."""
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("rabbitmqctl is needed to make a vhost of one's own; install rabbitmq-server")
    for attempt in range(3):
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode == 0:
            return done.stdout
        time.sleep(1 + attempt)
    raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr}")


@contextmanager
def fresh_vhost(prefix: str = "lantern-test") -> Iterator[str]:
    """A new vhost, deleted afterwards with everything in it; yields its AMQP URL."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBITMQ_HOST}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def broker_users_unavailable(amqp_url: str) -> str | None:
    """None when the devstack can make users of its own on `amqp_url`'s broker, else why not:
    rabbitmqctl changes the node on this machine, so the URL must name this machine too."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH"
    host = urlsplit(amqp_url).hostname or "localhost"
    if host not in {"localhost", "127.0.0.1", "::1"}:
        return f"the broker at {host} is not this machine's, which rabbitmqctl changes"
    return None


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


@contextmanager
def service_users(amqp_url: str, publishes: Mapping[str, Sequence[str]]) -> Iterator[dict[str, str]]:
    """A RabbitMQ user per component of `publishes` (component -> the events it publishes),
    with the permissions the chart gives it on `amqp_url`'s vhost, imported from definitions as
    the chart's RabbitMQ imports them; yields each one's AMQP URL. Users are global, not per
    vhost: each is named uniquely for this run and deleted afterwards."""
    from lantern_runtime.messaging.permissions import BrokerUser, definitions

    vhost = vhost_of(amqp_url)
    run = uuid.uuid4().hex[:8]
    parts = urlsplit(amqp_url)
    users = [
        BrokerUser(f"lantern-{component}-{run}", secrets.token_hex(16), component, tuple(events))
        for component, events in publishes.items()
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(definitions(vhost, users), file)
        file.flush()
        # rabbitmqctl runs as root here and the node as rabbitmq: the node reads the file.
        os.chmod(file.name, 0o644)
        rabbitmqctl("import_definitions", file.name)
    try:
        yield {
            user.component: parts._replace(
                netloc=f"{quote(user.name, safe='')}:{user.password}@{parts.hostname}:{parts.port or 5672}"
            ).geturl()
            for user in users
        }
    finally:
        with ThreadPoolExecutor(len(users) or 1) as pool:
            list(pool.map(lambda user: rabbitmqctl("delete_user", user.name), users))
