"""The chart's default values run as containers: two gateway, two orders and two payments
replicas, one bank, one notifier, each replica a pod of its own under its Service's name, the
gateways sharing one Redis limiter, notifier posting to a webhook receiver of the test's own.

Proven with bursts of orders through both gateways, counting each effect where nothing dedups
it (the bank's received calls per order, the receiver's POSTs per order, the orders' rows per
customer): both payments replicas authorize a share and both orders relays publish a share,
every order is final, authorized and notified once; one client over the rate limit is refused
by either gateway, the two admitting no more than one budget; and killing one replica each of
gateway, orders and payments mid-burst loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.auth import issue_token
from gateway.settings import EdgeSettings
from lantern_runtime.smoke import ORDER
from lantern_runtime.subject import SignedSubject
from tests.containers.images import docker
from tests.containers.platform import Platform
from tests.containers.replicas import (
    REDIS,
    OneReplica,
    authorize_calls_by_pod,
    build_redis_image,
    default_render,
    network_gateway,
    pod_names,
    psql,
    publishes_by_pod,
    received_by_pod,
    replica_counts,
    start_redis,
    start_replicas,
    traces_of,
)
from tests.deploy.deploy_support import chart_components
from tests.faults.conftest import (
    assert_settled_once,
    authorizations_by_order,
    bank_requests_by_order,
    place_orders,
    resends,
    wait_for,
    wait_until_final,
)
from tests.webhook_receiver import WebhookReceiver, outcome_problems, wait_for_outcomes

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

BURST = 120
# Orders a second from the burst's one client: under the limit (edge.rateLimit) the two
# gateways share.
RATE = 15
# Orders placed straight at each orders replica beside the burst.
DIRECT = 20
SCALED = ("gateway", "orders", "payments")
RATE_LIMIT_PREFIX = EdgeSettings.model_fields["rate_limit_prefix"].default
# What the gateway logs for each take Redis did not answer (gateway/ratelimit.py).
FALLBACK = "rate limiting falls back to memory"


@dataclass
class Defaults:
    platform: Platform
    webhook: WebhookReceiver
    pods: list[str]
    # What each scenario measured, printed in the tier's summary.
    figures: dict[str, str] = field(default_factory=dict)
    # The orders of the scenarios so far, each checked settled once.
    settled: set[str] = field(default_factory=set)

    def gateway_urls(self) -> list[str]:
        return [self.platform.url(pod) for pod in self.pods if pod.startswith("gateway-")]

    def token(self, subject: str, scopes: tuple[str, ...] = ("orders:write", "orders:read")) -> str:
        secret = self.platform.render.secret_data("gateway-auth")["jwt-secret"]
        return issue_token(secret, subject=subject, scopes=scopes, ttl=900)

    def as_customer(self, subject: str) -> SignedSubject:
        secret = self.platform.render.secret_data("gateway-auth")["subject-secret"]
        return SignedSubject(secret, subject, service="orders")


@dataclass
class Figures:
    """A pytest plugin that prints the scenarios' figures with the tier's own summary lines."""

    figures: dict[str, str]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for figure in self.figures.values():
            terminalreporter.write_line(f"container tier: default replicas: {figure}")


@pytest.fixture(scope="module")
def defaults(
    images: dict[str, str], tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Defaults]:
    network = f"lantern-ct-replicas-{os.getpid()}"
    docker("network", "create", network)
    redis_image = build_redis_image()
    # On the host, at its address on the network: what notifier POSTs reaches the test itself.
    with WebhookReceiver(host=network_gateway(network)).serving() as webhook:
        render = default_render(webhook.url)
        counts = replica_counts(render)
        wanted = {
            render.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["image"]
            for name in counts
        }
        assert wanted <= set(images.values()), f"the default render runs {wanted}, the tier built {images}"
        pods = [pod for name, count in counts.items() for pod in pod_names(name, count)]
        platform = Platform(render, network, tmp_path_factory.mktemp("replicas"), images["infra"], pods)
        redis = ""
        try:
            platform.start_trace_receiver(images["gateway"])
            redis = start_redis(platform, redis_image)
            for stand_in in ("postgres", "rabbitmq"):
                platform.start_stand_in(stand_in)
            start_replicas(platform, counts)
            platform.wait_ready(pods, timeout=300)
            ran = Defaults(platform, webhook, pods)
            pytestconfig.pluginmanager.register(Figures(ran.figures), "lantern-default-replicas")
            yield ran
        finally:
            if redis:
                docker("rm", "--force", redis, check=False)
            platform.remove()


@dataclass
class Gateways:
    """A client of the gateway Service as a load balancer spreads it: each request to the next
    replica's address in turn; one that gets no answer (or a 502/503/504) is sent again with the
    same Idempotency-Key to the next replica, and a replica that failed to answer gets no more."""

    urls: list[str]
    token: str
    # Idempotency-Key -> (order id, trace id of the answered request)
    placed: dict[str, tuple[str, str]] = field(default_factory=dict)
    answered_by: Counter[str] = field(default_factory=Counter)
    resent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    ejected: set[str] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, count: int, rate: float) -> None:
        try:
            asyncio.run(self._run(count, rate))
        finally:
            self.done.set()

    async def _run(self, count: int, rate: float) -> None:
        timeout = httpx.Timeout(10, connect=2)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
            began, tasks = time.monotonic(), []
            for sent in range(count):
                tasks.append(asyncio.create_task(self._one(client, sent)))
                await asyncio.sleep(max(0.0, began + (sent + 1) / rate - time.monotonic()))
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, n: int) -> None:
        key = str(uuid.uuid4())
        for attempt in range(6):
            live = [url for url in self.urls if url not in self.ejected] or self.urls
            url = live[(n + attempt) % len(live)]
            try:
                answer = await client.post(f"{url}/api/orders", json=ORDER, headers={"Idempotency-Key": key})
            except httpx.TransportError as error:
                self.ejected.add(url)
                self.resent[type(error).__name__] += 1
                continue
            if answer.status_code in (502, 503, 504):
                self.resent[str(answer.status_code)] += 1
                await asyncio.sleep(0.5)
                continue
            if answer.status_code != 202:
                self.refused[str(answer.status_code)] += 1
                return
            self.answered_by[url] += 1
            trace_id = answer.headers["traceresponse"].split("-")[1]
            self.placed[key] = (answer.json()["order_id"], trace_id)
            return
        self.refused["no answer after 6 attempts"] += 1


def orders_of(defaults: Defaults, subject: str) -> int:
    """The orders' rows of one customer: what a POST applied twice would add to."""
    # The subjects are the tests' own, letters, digits and dashes: nothing to quote.
    assert re.fullmatch(r"[a-z0-9-]+", subject), subject
    query = f"SELECT count(*) FROM orders WHERE customer_id = '{subject}'"  # noqa: S608
    return int(psql(defaults.platform, "orders", query))


def unsent(defaults: Defaults) -> dict[str, int]:
    """Rows not yet published, in each service database that has an outbox."""
    query = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
    return {db: int(psql(defaults.platform, db, query)) for db in ("orders", "payments")}


def settle(defaults: Defaults, subject: str, order_ids: list[str]) -> dict[str, str]:
    """Waits for every placed order to be final and checks each was applied once: one order row
    per key, authorized once and notified once (the bank's calls and the receiver's POSTs)."""
    statuses = wait_until_final(
        defaults.platform.url("orders-0"), order_ids, timeout=180, auth=defaults.as_customer(subject)
    )
    assert Counter(statuses.values()) == Counter({"confirmed": len(order_ids)}), Counter(statuses.values())
    assert orders_of(defaults, subject) == len(set(order_ids))
    assert_settled_once(OneReplica(defaults.platform), statuses)  # type: ignore[arg-type]
    # The receiver has every scenario's POSTs: those of the orders settled before are not strangers.
    posts = wait_for_outcomes(defaults.webhook, statuses)
    problems = outcome_problems({o: p for o, p in posts.items() if o not in defaults.settled}, statuses)
    assert not problems, f"{len(problems)} orders wrong at the webhook: {problems[:10]}"
    defaults.settled.update(statuses)
    assert wait_for(lambda: set(unsent(defaults).values()) == {0}, 60), unsent(defaults)
    return statuses


def test_the_default_render_runs_two_replicas_of_gateway_orders_and_payments_each_under_its_service_name(
    defaults: Defaults,
) -> None:
    counts = replica_counts(defaults.platform.render)
    assert counts == {name: c["replicas"] for name, c in chart_components().items() if c["enabled"]}
    assert {name: counts[name] for name in SCALED} == dict.fromkeys(SCALED, 2)
    assert (counts["bank"], counts["notifier"]) == (1, 1)
    # A Service name resolves to every replica, as from a pod in the namespace.
    for name in SCALED:
        ips = {defaults.platform.ip(pod) for pod in defaults.pods if pod.rsplit("-", 1)[0] == name}
        lookup = docker(
            "exec", defaults.platform.container("bank-0"), "python", "-c",
            f"import socket; print(' '.join(sorted({{a[4][0] for a in socket.getaddrinfo({name!r}, 80)}})))",
        ).stdout.split()  # fmt: skip
        assert set(lookup) == ips, (name, lookup, ips)
    gateway_env = defaults.platform.runs["gateway-0"].env
    assert gateway_env["REDIS_URL"] == "redis://redis:6379/0"
    assert defaults.platform.runs["notifier-0"].env["NOTIFIER_WEBHOOK_URL"] == defaults.webhook.url


def test_a_burst_is_shared_by_both_payments_replicas_and_both_orders_relays_and_each_order_settles_once(
    defaults: Defaults,
) -> None:
    platform = defaults.platform
    subject = f"shares-{uuid.uuid4().hex[:8]}"
    burst = Gateways(defaults.gateway_urls(), defaults.token(subject))
    # Beside the gateways' burst, a few orders straight at each orders replica, as another caller
    # of the orders Service: a gateway's kept-alive connections may all be to one replica (a
    # Service balances connections, not requests), and each relay is woken by its own commits.
    direct: dict[str, list[str]] = {}

    def straight_at(pod: str) -> None:
        auth = defaults.as_customer(subject)
        direct[pod] = asyncio.run(place_orders(platform.url(pod), DIRECT, auth=auth))

    callers = [threading.Thread(target=straight_at, args=(pod,)) for pod in ("orders-0", "orders-1")]
    for caller in callers:
        caller.start()
    burst.run(BURST, RATE)
    for caller in callers:
        caller.join(timeout=120)
    assert (len(burst.placed), burst.refused, burst.resent) == (BURST, Counter(), Counter())
    assert {pod: len(ids) for pod, ids in direct.items()} == {"orders-0": DIRECT, "orders-1": DIRECT}
    assert set(burst.answered_by) == set(defaults.gateway_urls()), burst.answered_by
    order_ids = [order_id for order_id, _ in burst.placed.values()] + [
        o for ids in direct.values() for o in ids
    ]
    settle(defaults, subject, order_ids)

    # Each order's one authorize call, by the payments replica that made it, once every trace is
    # in (a replica exports its spans in batches).
    def traced() -> bool:
        spans = platform.spans()
        calls = authorize_calls_by_pod(spans, traces_of(spans, order_ids).values())
        published = publishes_by_pod(spans, traces_of(spans, order_ids).values(), "orders", "order.created")
        return min(sum(calls.values()), sum(published.values())) >= len(order_ids)

    assert wait_for(traced, 60)
    time.sleep(1)  # a second copy of a span right behind the first shows too
    spans = platform.spans()
    trace_ids = traces_of(spans, order_ids)
    assert len(trace_ids) == len(order_ids)
    calls = authorize_calls_by_pod(spans, trace_ids.values())
    assert sum(calls.values()) == len(order_ids), calls
    assert set(calls) == {"payments-0", "payments-1"}, calls
    assert min(calls.values()) >= len(order_ids) // 5, f"one payments replica did almost nothing: {calls}"
    # Each order.created published once, by one relay or the other: two relays polling one
    # outbox never both publish a row (SKIP LOCKED, on PostgreSQL).
    published = publishes_by_pod(spans, trace_ids.values(), "orders", "order.created")
    assert sum(published.values()) == len(order_ids), published
    assert set(published) == {"orders-0", "orders-1"}, published
    assert min(published.values()) >= DIRECT // 2, f"one orders relay published almost nothing: {published}"
    via_gateways = [trace_ids[order_id] for order_id, _ in burst.placed.values()]
    posts = received_by_pod(spans, via_gateways, "orders", "POST /api/orders")
    defaults.figures["shares"] = (
        f"{BURST} orders at {RATE}/s over both gateways {sorted(burst.answered_by.values())}, which "
        f"passed them to orders replicas {dict(sorted(posts.items()))}, and {DIRECT} straight at "
        f"each: authorize calls by payments replica {dict(sorted(calls.items()))}, order.created "
        f"published by orders relay {dict(sorted(published.items()))}; each order confirmed, "
        "authorized and notified once"
    )


def test_one_client_over_the_rate_limit_is_refused_by_either_gateway_and_both_admit_one_budget(
    defaults: Defaults,
) -> None:
    platform = defaults.platform
    subject = f"limited-{uuid.uuid4().hex[:8]}"
    rate = float(platform.runs["gateway-0"].env["GATEWAY_RATE_LIMIT"])
    burst = 2 * rate
    gateways = {pod: platform.url(pod) for pod in defaults.pods if pod.startswith("gateway-")}
    offered = int(4 * burst)
    answers: dict[str, Counter[int]] = {pod: Counter() for pod in gateways}

    async def flood(client: httpx.AsyncClient, pod: str) -> None:
        # Few at a time: the address's bucket, which every request takes from until its token
        # verifies, stays far from empty, so each 429 is the subject's.
        gate = asyncio.Semaphore(8)

        async def one() -> None:
            async with gate:
                answer = await client.get(f"{gateways[pod]}/api/orders/{uuid.uuid4()}")
                answers[pod][answer.status_code] += 1

        await asyncio.gather(*(one() for _ in range(offered)))

    async def both() -> float:
        headers = {"Authorization": f"Bearer {defaults.token(subject, ('orders:read',))}"}
        async with httpx.AsyncClient(headers=headers, timeout=10) as client:
            began = time.monotonic()
            await asyncio.gather(*(flood(client, pod) for pod in gateways))
            return time.monotonic() - began

    since = f"{time.time():.3f}"
    elapsed = asyncio.run(both())
    bucket = docker(
        "exec", platform.container(REDIS), "redis-cli", "HGET", f"{RATE_LIMIT_PREFIX}sub:{subject}", "tokens"
    )
    admitted = {
        pod: sum(n for status, n in counted.items() if status != 429) for pod, counted in answers.items()
    }
    # A take Redis did not answer in time (the machine loaded) is decided from that replica's
    # memory, each logged: at most one admission more apiece. Too many, and Redis is not the one
    # counting.
    logged = {pod: docker("logs", "--since", since, platform.container(pod)) for pod in gateways}
    fallbacks = {pod: (out.stdout + out.stderr).count(FALLBACK) for pod, out in logged.items()}
    assert sum(fallbacks.values()) <= 0.1 * offered * len(gateways), fallbacks
    assert bucket.stdout.strip(), f"no bucket of {subject} in Redis: {bucket.stdout!r}"
    # One bucket: its burst and its refill over the flood. Each gateway deciding alone would
    # admit a whole bucket apiece, which this leaves no room for.
    bound = burst + rate * elapsed + 1 + sum(fallbacks.values())
    assert all(answers[pod][429] > 0 for pod in gateways), answers
    assert sum(admitted.values()) <= bound, (admitted, elapsed, fallbacks, answers)
    assert {status for counted in answers.values() for status in counted} <= {404, 429}, answers
    defaults.figures["rate limit"] = (
        f"one client, {offered} requests to each gateway at once over {elapsed:.1f} s: admitted "
        f"{admitted} (429s {dict((pod, a[429]) for pod, a in answers.items())}), "
        f"{sum(admitted.values())} in all within one budget of {burst:.0f} + {rate:.0f}/s "
        f"({bound:.0f}; {sum(fallbacks.values())} decisions fell back to memory)"
    )


def test_killing_a_gateway_an_orders_and_a_payments_replica_mid_burst_loses_nothing_and_doubles_nothing(
    defaults: Defaults,
) -> None:
    platform = defaults.platform
    subject = f"kills-{uuid.uuid4().hex[:8]}"
    burst = Gateways(defaults.gateway_urls(), defaults.token(subject))
    survivors = [pod for pod in defaults.pods if not pod.endswith("-1")]
    started_at = {pod: platform.state(pod)["StartedAt"] for pod in survivors}
    sender = threading.Thread(target=burst.run, args=(BURST, RATE))
    sender.start()
    authorized: set[str] = set()
    try:
        # Killed once payments is at work: ten of the burst's orders authorized at bank.
        deadline = time.monotonic() + 60
        while len(authorized) < 10 and time.monotonic() < deadline:
            waiting = [o for o, _ in list(burst.placed.values()) if o not in authorized]
            found = authorizations_by_order(platform.url("bank-0"), waiting)
            authorized.update(o for o, records in found.items() if records)
            time.sleep(0.1)
        assert len(authorized) >= 10, f"payments authorized {len(authorized)} orders in 60 s, not 10"
        killed = ["gateway-1", "orders-1", "payments-1"]
        docker("kill", *(platform.container(pod) for pod in killed))
        assert not burst.done.is_set(), "the burst was over before the kill"
        placed_at_kill = len(burst.placed)
    finally:
        sender.join(timeout=300)
    assert {pod: platform.state(pod)["ExitCode"] for pod in killed} == dict.fromkeys(killed, 137)
    assert (len(burst.placed), burst.refused) == (BURST, Counter()), (len(burst.placed), burst.refused)
    assert placed_at_kill < BURST
    statuses = settle(defaults, subject, [order_id for order_id, _ in burst.placed.values()])
    # Work the killed payments replica held, redelivered to the other: asked again, same key.
    asked = resends(bank_requests_by_order(platform.url("bank-0"), statuses))
    # The survivors did the rest by themselves, without a restart.
    assert {pod: platform.state(pod)["StartedAt"] for pod in survivors} == started_at
    assert {pod: platform.restarts(pod) for pod in survivors} == dict.fromkeys(survivors, 0)
    defaults.figures["kills"] = (
        f"killed {', '.join(killed)} after {placed_at_kill} of {BURST} orders; the client resent "
        f"{sum(burst.resent.values())} ({dict(burst.resent)}) to the other gateway; the bank was "
        f"asked n times for so many orders {dict(sorted(asked.items()))} (a resend: the same key); "
        "every order confirmed, one order row per key, authorized once, notified once, outboxes drained"
    )
