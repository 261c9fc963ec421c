"""RabbitMQ vhosts of their own, for test and benchmark runs that must not see each other's
queues (or those of `make run`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

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
