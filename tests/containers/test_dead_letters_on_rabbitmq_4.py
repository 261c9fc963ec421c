"""Dead letters on the chart's RabbitMQ major (4.x), where a quorum queue has a delivery limit of
20 by default and, before 4.3, every message given back counts toward it: a message failing
every attempt reaches `.dead` after exactly the configured attempts, listing it more often than
that limit leaves it where it was, and the admin's replay applies it once.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lantern_runtime.messaging.topology import DELIVERY_LIMIT
from lantern_runtime.settings import BrokerSettings
from order_flow.topology import PAYMENTS_QUEUE
from tests.containers.images import docker
from tests.containers.test_chart_on_real_images import as_customer, started
from tests.faults.conftest import authorizations_by_order, order_body, wait_for, wait_until_final

if TYPE_CHECKING:
    from tests.containers.platform import Platform

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

# More looks than the 4.x quorum delivery limit: a `.dead` queue that counted them would drop.
LOOKS = DELIVERY_LIMIT + 5
LIST_REPEATEDLY = f"""
import asyncio, json, os
from lantern_runtime.messaging import deadletters
async def main():
    seen = []
    for _ in range({LOOKS}):
        letters = await deadletters.list_dead_letters(os.environ["AMQP_URL"], ["{PAYMENTS_QUEUE.name}"])
        seen.append([[l.message_id, l.message_type, l.attempts, l.reason, l.body.decode()] for l in letters])
    print(json.dumps(seen))
asyncio.run(main())
"""


def as_admin(platform: Platform, *argv: str) -> str:
    """A command of the Lantern image on the platform's network, as the broker's admin (whose URL
    the chart gives the topology step): the services' users may read no dead queue."""
    admin_url = platform.render.secret_data("rabbitmq-credentials")["url"]
    image = platform.runs["payments"].image
    args = ["run", "--rm", "--network", platform.network, "--env", f"AMQP_URL={admin_url}", image, *argv]
    return docker(*args, timeout=180).stdout


def dead_letters(platform: Platform, verb: str) -> str:
    """The admin's dead-letter CLI (list or replay) on payments' work queue."""
    return as_admin(
        platform,
        "python",
        "-m",
        "lantern_runtime.messaging.deadletters",
        verb,
        "--queue",
        PAYMENTS_QUEUE.name,
    )


def rabbitmqctl(platform: Platform, *argv: str) -> str:
    return docker("exec", "--user", "rabbitmq", platform.container("rabbitmq"), "rabbitmqctl", *argv).stdout


def log_records(platform: Platform, name: str) -> list[dict[str, Any]]:
    records = []
    for line in platform.logs(name).splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def test_the_stand_in_is_rabbitmq_4_with_prometheus_and_quorum_work_queues_limited_to_20(
    platform: Platform,
) -> None:
    started(platform)
    metrics = httpx.get(
        f"http://{platform.ip('rabbitmq')}:{platform.runs['rabbitmq'].ports['prometheus']}/metrics"
    )
    assert metrics.status_code == 200
    assert 'rabbitmq_version="4.' in metrics.text
    queues = {
        q["name"]: q
        for q in json.loads(
            rabbitmqctl(platform, "list_queues", "--formatter", "json", "name", "type", "arguments")
        )
    }
    work = queues[PAYMENTS_QUEUE.name]
    # rabbitmqctl's JSON gives a queue's arguments as [name, type, value] triples.
    arguments = {argument[0]: argument[-1] for argument in work["arguments"]}
    assert (work["type"], arguments["x-delivery-limit"]) == ("quorum", DELIVERY_LIMIT)
    assert queues[PAYMENTS_QUEUE.dead_name]["type"] == "classic"


def test_a_void_the_bank_never_answers_is_dead_lettered_after_exactly_the_configured_attempts_then_replayed(
    platform: Platform,
) -> None:
    started(platform)
    env = platform.runs["payments"].env
    attempts = int(env.get("MAX_DELIVERY_ATTEMPTS", BrokerSettings().max_delivery_attempts))
    docker("stop", platform.container("bank"))
    placed = httpx.post(
        f"{platform.url('orders')}/api/orders",
        json=order_body(),
        headers={"Idempotency-Key": str(uuid.uuid4())},
        auth=as_customer(platform),
        timeout=10,
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    # The authorization's last attempt declines (the order gets an answer); the void of the
    # cancelled order has no such way out and fails every attempt.
    assert wait_until_final(platform.url("orders"), [order_id], timeout=120, auth=as_customer(platform)) == {
        order_id: "cancelled"
    }

    def dead_lettered() -> list[dict[str, Any]]:
        return [
            r
            for r in log_records(platform, "payments")
            if r.get("message") == "dead-lettering message" and r.get("message_type") == "order.cancelled"
        ]

    assert wait_for(lambda: len(dead_lettered()) == 1, 120), platform.logs("payments")[-3000:]
    [dead] = dead_lettered()
    retried = [
        r["attempt"]
        for r in log_records(platform, "payments")
        if r.get("message") == "retrying message" and r.get("message_id") == dead["message_id"]
    ]
    assert (retried, dead["attempts"]) == (list(range(1, attempts)), attempts)

    # Listed more often than a quorum queue's delivery limit: the same one dead letter each time.
    looks = json.loads(as_admin(platform, "python", "-c", LIST_REPEATEDLY))
    assert len(looks) == LOOKS
    assert all(look == looks[0] for look in looks), looks
    [[message_id, message_type, recorded_attempts, reason, body]] = looks[0]
    assert (message_id, message_type, recorded_attempts) == (dead["message_id"], "order.cancelled", attempts)
    assert order_id in body and reason == dead["reason"]
    listed = dead_letters(platform, "list")
    assert f"attempts={attempts}" in listed and "1 dead letter(s)" in listed, listed

    docker("start", platform.container("bank"))
    platform.wait_ready(["bank"])
    replayed = dead_letters(platform, "replay")
    assert f"replayed 1 message(s) onto {PAYMENTS_QUEUE.name}" in replayed
    assert wait_for(
        lambda: authorizations_by_order(platform.url("bank"), [order_id])[order_id] == ["voided"], 60
    )
    again = dead_letters(platform, "list")
    assert "0 dead letter(s)" in again, again
