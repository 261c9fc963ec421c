"""An ASGI app served for real on a loopback port, in a thread: a stand-in upstream or a JWKS
endpoint that tests (and local experiments) reach over actual HTTP."""

from __future__ import annotations

import random
import socket
import threading
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp


_LOWEST = 20_000
_handed_out: set[int] = set()


@cache
def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A loopback port that is free now, for a server this process is about to start; never
    the same one twice in a process.

    Not port 0's pick: that comes from the ephemeral range, where any outgoing connection (to
    RabbitMQ, PostgreSQL, another service) may take it as its own source port before the server
    meant to bind it has started. Below that range only servers ask for ports, by number.
    """
    top = _ephemeral_start()
    # A machine whose ephemeral range starts low leaves too few ports below it: port 0 then.
    for _ in range(100 if top - _LOWEST >= 1_000 else 0):
        port = random.randrange(_LOWEST, top)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: ASGIApp, port: int | None = None, timeout: float = 10.0) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL, e.g. http://127.0.0.1:50123."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"loopback-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the loopback server on port {port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
