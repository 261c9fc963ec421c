"""The five real images, run with exactly what the chart's kind render gives each Deployment,
on a Docker network where every Service name resolves, RabbitMQ and PostgreSQL included.

The tests run in file order on one platform: started before its broker and database, then
one order, a consumer killed mid-burst, the probes, and last a drain of every service.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lantern_runtime.smoke import ORDER, mint_token
from lantern_runtime.subject import SignedSubject
from lantern_runtime.trace_contract import check_trace, order_flow_chain, render_tree
from tests.containers.images import docker
from tests.faults.conftest import (
    CUSTOMER,
    assert_settled_once,
    authorizations_by_order,
    place_orders,
    wait_for,
    wait_until_final,
)

if TYPE_CHECKING:
    from tests.containers.platform import Platform

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]


def needing_infra(platform: Platform) -> list[str]:
    """The services the render gives a broker or a database: they cannot work without them."""
    return [
        name for name in platform.services if {"AMQP_URL", "DATABASE_URL"} & platform.runs[name].env.keys()
    ]


def as_customer(platform: Platform, subject: str = CUSTOMER) -> SignedSubject:
    """httpx auth for calling the orders container directly as `subject`, signed with the key
    the render gave it, as the gateway signs."""
    return SignedSubject(platform.runs["orders"].env["GATEWAY_SUBJECT_SECRET"], subject, service="orders")


def init_containers(platform: Platform, name: str) -> list[dict[str, Any]]:
    """The pod's init containers as the chart renders them, in the order they run."""
    spec = platform.render.get("Deployment", name)["spec"]["template"]["spec"]
    return list(spec.get("initContainers", []))


def started(platform: Platform) -> Platform:
    """The platform with every service and both stand-ins running and ready."""
    for name in platform.services:
        if name not in platform.runs:
            platform.start_service(name)
    for name in ("rabbitmq", "postgres"):
        if name not in platform.runs:
            platform.start_stand_in(name)
    platform.wait_ready(platform.services)
    return platform


def test_services_started_before_postgres_and_rabbitmq_wait_then_become_ready_without_a_restart(
    platform: Platform,
) -> None:
    for name in platform.services:
        platform.start_service(name)
    time.sleep(15)
    # A pod whose init container (its migration) waits for PostgreSQL has not started its service
    # yet: it waits rather than failing, as the kubelet would show it in Init. The others run.
    waiting_inits = {name: inits[0] for name, inits in platform.inits.items() if inits}
    for name, init in waiting_inits.items():
        assert platform.container_state(init)["Running"], (name, platform.container_logs(init)[-2000:])
        assert not platform.exists(name), f"{name} started before its migration finished"
    others = sorted(set(platform.services) - set(waiting_inits))
    for name in others:
        assert platform.state(name)["Running"], (name, platform.logs(name)[-2000:])
    # On a loaded machine a container limited to half a CPU may still be importing.
    assert wait_for(lambda: all(platform.probe(name, "livenessProbe") == 200 for name in others), 60), others

    # PostgreSQL first: the migrations finish. A pod with a broker then waits in its topology
    # step (the next init container, which declares the queues as the broker's admin) for
    # RabbitMQ; one with only a database starts and waits in its own process: alive, not ready.
    platform.start_stand_in("postgres")
    for init in waiting_inits.values():
        assert wait_for(lambda init=init: not platform.container_state(init)["Running"], 120), init
        assert platform.container_state(init)["ExitCode"] == 0, platform.container_logs(init)[-2000:]
    topology_steps = {
        name: platform.inits[name][index]
        for name in platform.services
        for index, init in enumerate(init_containers(platform, name))
        if init["name"] == "topology"
    }
    assert wait_for(
        lambda: all(docker("inspect", init, check=False).returncode == 0 for init in topology_steps.values()),
        60,
    )
    for name, init in topology_steps.items():
        assert platform.container_state(init)["Running"], (name, platform.container_logs(init)[-2000:])
        # Its first attempt may still be importing; the first refused one says why it waits.
        assert wait_for(lambda init=init: "waiting for the broker" in platform.container_logs(init), 60), name
        assert not platform.exists(name), f"{name} started before its topology was declared"
    needs_infra = [name for name in needing_infra(platform) if name not in topology_steps]
    assert wait_for(lambda: all(platform.probe(name, "livenessProbe") == 200 for name in needs_infra), 120)
    probes = {
        name: (platform.probe(name, "livenessProbe"), platform.probe(name, "readinessProbe"))
        for name in needs_infra
    }
    assert probes == dict.fromkeys(needs_infra, (200, 503)), probes
    running_since = {
        name: platform.state(name)["StartedAt"] for name in platform.services if platform.exists(name)
    }

    platform.start_stand_in("rabbitmq")
    platform.wait_ready(platform.services, timeout=180)
    assert {name: platform.restarts(name) for name in platform.services} == dict.fromkeys(
        platform.services, 0
    )
    assert {name: platform.state(name)["StartedAt"] for name in running_since} == running_since


def test_one_order_through_the_gateway_is_confirmed_with_its_trace_whole(platform: Platform) -> None:
    started(platform)
    secret = platform.render.secret_data("gateway-auth")["jwt-secret"]
    headers = {"Authorization": f"Bearer {mint_token(secret)}"}
    with httpx.Client(base_url=platform.url("gateway"), headers=headers, timeout=10) as gateway:
        placed = gateway.post("/api/orders", json=ORDER, headers={"Idempotency-Key": str(uuid.uuid4())})
        assert placed.status_code == 202, placed.text
        order_id, trace_id = placed.json()["order_id"], placed.headers["traceresponse"].split("-")[1]
        # The order is the token's subject's (the smoke token's, helm-test).
        final = wait_until_final(platform.url("orders"), [order_id], auth=as_customer(platform, "helm-test"))
        assert final == {order_id: "confirmed"}

    deadline, problems, tree = time.monotonic() + 30, ["no span yet"], ""
    while problems and time.monotonic() < deadline:
        spans = [span for span in platform.spans() if span.trace_id == trace_id]
        problems, tree = check_trace(spans, order_flow_chain("authorized")), render_tree(spans)
        time.sleep(0.5)
    assert not problems, f"{problems}\n{tree}"
    assert {span.service for span in spans} >= {"gateway", "orders", "payments", "bank", "notifier"}


def test_a_consumer_container_killed_mid_burst_loses_nothing_and_applies_nothing_twice(
    platform: Platform,
) -> None:
    started(platform)
    accepted: list[str] = []
    burst = threading.Thread(
        target=lambda: asyncio.run(
            place_orders(platform.url("orders"), 60, accepted=accepted, auth=as_customer(platform))
        )
    )
    burst.start()
    deadline = time.monotonic() + 60
    authorized: set[str] = set()
    # Killed once payments is at work: ten of the burst's orders authorized at bank.
    while len(authorized) < 10 and time.monotonic() < deadline:
        waiting = [order_id for order_id in list(accepted) if order_id not in authorized]
        found = authorizations_by_order(platform.url("bank"), waiting)
        authorized.update(order_id for order_id, records in found.items() if records)
        time.sleep(0.05)
    assert len(authorized) >= 10, f"payments authorized {len(authorized)} orders in 60 s, not 10"
    docker("kill", platform.container("payments"))
    assert len(authorized) < 60, "the burst was over before the kill"
    burst.join()
    assert platform.state("payments")["ExitCode"] == 137
    docker("start", platform.container("payments"))
    platform.wait_ready(["payments"])
    statuses = wait_until_final(platform.url("orders"), accepted, timeout=120, auth=as_customer(platform))
    assert len(accepted) == 60
    assert set(statuses.values()) == {"confirmed"}
    assert_settled_once(platform, statuses)  # type: ignore[arg-type]


def test_probes_answer_on_the_ports_and_paths_the_chart_gives_them(platform: Platform) -> None:
    started(platform)
    for name in platform.services:
        answers = {probe: platform.probe(name, probe) for probe in platform.runs[name].probes}
        assert answers == dict.fromkeys(platform.runs[name].probes, 200), name


def test_the_rendered_env_names_services_only_by_their_service_names(platform: Platform) -> None:
    started(platform)
    for name in platform.services:
        env = platform.runs[name].env
        loopback = {k: v for k, v in env.items() if "localhost" in v or "127.0.0.1" in v}
        assert not loopback, (name, loopback)
    orders_env = platform.runs["orders"].env
    assert "@rabbitmq:5672/" in orders_env["AMQP_URL"]
    # Each service as its own broker user, created by RabbitMQ from the chart's definitions.
    for name in ("orders", "payments", "notifier"):
        assert platform.runs[name].env["AMQP_URL"].startswith(f"amqp://{name}:"), name
    assert "@postgres:5432/orders" in orders_env["DATABASE_URL"]
    assert platform.runs["payments"].env["BANK_URL"] == "http://bank:8003"


def test_docker_stop_drains_each_service_and_exits_0_within_the_grace_period(platform: Platform) -> None:
    started(platform)
    for name in platform.services:
        run = platform.runs[name]
        # The kubelet runs the preStop sleep first, then sends SIGTERM with what is left.
        budget = run.grace_seconds - run.pre_stop_sleep
        began = time.monotonic()
        docker("stop", "--time", str(budget), platform.container(name), timeout=budget + 30)
        elapsed = time.monotonic() - began
        state = platform.state(name)
        assert (state["ExitCode"], elapsed < budget) == (0, True), (
            name,
            elapsed,
            platform.logs(name)[-1500:],
        )
        assert "Application shutdown complete." in platform.logs(name), name
