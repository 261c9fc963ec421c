"""What a running devstack writes under its workdir (logs, SQLite databases, spans, the
secret) is its owner's alone, in a workdir an older checkout left world-readable too."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from devstack.loopback import free_port
from devstack.stack import COMPONENTS, Stack, development_secret
from tests.faults.conftest import wait_for

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

# One service with a database and one without: their logs, notifier's SQLite files and the
# trace sink's spans are all written by processes the stack starts.
SERVICES = ("bank", "notifier")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_everything_a_running_devstack_writes_is_0600_in_0700_directories(
    tmp_path: Path, amqp_url: str
) -> None:
    workdir = tmp_path / ".lantern"
    (workdir / "logs").mkdir(parents=True)
    (workdir / "logs" / "bank.log").write_text("an older run's log\n")
    (workdir / "logs" / "bank.log").chmod(0o644)
    for directory in (workdir, workdir / "logs"):
        directory.chmod(0o755)

    development_secret(workdir / "jwt-secret")
    stack = Stack(
        workdir,
        components={name: COMPONENTS[name] for name in SERVICES},
        ports={name: free_port() for name in SERVICES},
        amqp_url=amqp_url,
        sink_port=free_port(),
    )
    stack.start()
    try:
        # bank is waited for, not notifier: notifier writes its log and its database (the
        # migration first) whether or not it has its broker yet.
        assert wait_for(lambda: answers(f"{stack.url('bank')}/readyz")), stack.tail("bank")
        assert httpx.get(f"{stack.url('bank')}/authorizations", params={"order_id": "o-1"}).json() == []
        assert wait_for(lambda: stack.spans_file.exists() and stack.spans_file.stat().st_size > 0)
        assert wait_for(lambda: (workdir / "notifier.db").exists())
    finally:
        stack.stop()

    written = {str(path.relative_to(workdir)): mode(path) for path in workdir.rglob("*")}
    assert {
        "jwt-secret",
        "logs",
        "logs/bank.log",
        "logs/notifier.log",
        "logs/tracesink.log",
        "notifier.db",
        "spans.jsonl",
    } <= written.keys(), written
    assert mode(workdir) == 0o700
    loose = {
        name: oct(found)
        for name, found in written.items()
        if found != (0o700 if (workdir / name).is_dir() else 0o600)
    }
    assert loose == {}


def test_make_run_tightens_a_readable_state_directory_before_it_writes_the_secret(tmp_path: Path) -> None:
    workdir = tmp_path / ".lantern"
    workdir.mkdir()
    workdir.chmod(0o755)
    # RabbitMQ unreachable: `python -m devstack` has made its secret when it gives up.
    env = {**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "LANTERN_DEV_DIR": str(workdir)}
    env.pop("GATEWAY_JWT_SECRET", None)
    result = subprocess.run([sys.executable, "-m", "devstack"], env=env, capture_output=True, timeout=60)
    assert result.returncode == 1
    assert (mode(workdir), mode(workdir / "jwt-secret")) == (0o700, 0o600)
