"""A webhook receiver of the tests' own: an HTTP endpoint that records every POST it gets, as it
arrived, and answers as a test scripts it (a status, or a stall past the sender's timeout).

notifier dedups its notifications by message id before it POSTs; the receiver dedups nothing,
so what it records shows what a customer would really have been told, and how often.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.loopback import free_port

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from starlette.requests import Request

# The outcome event each final order status is notified with.
OUTCOME_KIND = {"confirmed": "order.confirmed", "cancelled": "order.cancelled"}


@dataclass(frozen=True)
class Answer:
    """How the receiver answers one POST: `status`, after `delay` seconds."""

    status: int = 200
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    key: str | None
    body: dict[str, Any]
    headers: dict[str, str]
    answered: int
    at: float


class WebhookReceiver:
    """Records every POST; answers the scripted answers in turn, then 200s."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._posts: list[Received] = []
        self._script: deque[Answer] = deque()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/orders"

    def script(self, *answers: Answer | int) -> None:
        """Answer the next POSTs so, one each, in order."""
        with self._lock:
            self._script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    @property
    def posts(self) -> list[Received]:
        with self._lock:
            return list(self._posts)

    def by_order(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = defaultdict(list)
        for post in self.posts:
            out[str(post.body.get("order_id"))].append(post)
        return dict(out)

    async def _receive(self, request: Request) -> JSONResponse:
        raw = await request.body()
        with self._lock:
            answer = self._script.popleft() if self._script else Answer()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        post = Received(
            request.headers.get("idempotency-key"), body, dict(request.headers), answer.status, time.time()
        )
        with self._lock:
            self._posts.append(post)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return JSONResponse({"received": True}, status_code=answer.status)

    @contextmanager
    def serving(self, timeout: float = 10.0) -> Iterator[WebhookReceiver]:
        app = Starlette(routes=[Route("/hooks/orders", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, host=self.host, port=self.port, log_config=None, lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"webhook-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the webhook receiver on port {self.port} did not start")
            time.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout)


def outcome_problems(posts_by_order: Mapping[str, list[Received]], statuses: Mapping[str, str]) -> list[str]:
    """What is wrong with the notifications received for orders in their final `statuses`:
    an order told nothing, told under two keys (two notifications, not one resent), told an
    outcome other than its own or two outcomes, a resend whose body differs, or a notification
    about an order not in `statuses`. Empty when each order was told its own outcome once,
    resends (after a failure or a redelivery) only under the same key with the same body."""
    problems = []
    for order_id, status in statuses.items():
        posts = posts_by_order.get(order_id, [])
        keys = Counter(post.key for post in posts)
        kinds = {str(post.body.get("kind")) for post in posts}
        bodies_by_key: dict[str | None, set[str]] = defaultdict(set)
        for post in posts:
            bodies_by_key[post.key].add(json.dumps(post.body, sort_keys=True))
        if not posts:
            problems.append(f"{order_id} ({status}): never notified")
        elif len(keys) != 1 or None in keys:
            problems.append(f"{order_id} ({status}): notified under {len(keys)} keys {dict(keys)}")
        if posts and kinds != {OUTCOME_KIND.get(status)}:
            problems.append(f"{order_id} ({status}): notified {sorted(kinds)}")
        for key, bodies in bodies_by_key.items():
            if len(bodies) > 1:
                problems.append(
                    f"{order_id} ({status}): resent under {key} with another body: {sorted(bodies)}"
                )
    strangers = sorted(set(posts_by_order) - set(statuses))
    if strangers:
        problems.append(f"notified of orders not placed here: {strangers[:10]}")
    return problems


def wait_for_outcomes(
    receiver: WebhookReceiver, order_ids: Iterable[str], timeout: float = 15.0
) -> dict[str, list[Received]]:
    """The receiver's posts by order once each of `order_ids` has at least one (or at timeout),
    and then a moment more, so that a duplicate right behind the first shows too."""
    wanted = set(order_ids)
    deadline = time.monotonic() + timeout
    while not wanted <= set(receiver.by_order()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    return receiver.by_order()
