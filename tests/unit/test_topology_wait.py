"""A service whose topology is not declared yet waits at start-up and says why, in the words
the topology check raised (queue X is not declared; run the topology step)."""

from __future__ import annotations

from lantern_runtime.messaging import TopologyNotDeclared
from lantern_runtime.startup import explain


def test_a_missing_queue_is_explained_by_name_with_the_step_to_run() -> None:
    missing = TopologyNotDeclared("queue payments.order-events.retry is not declared; run the topology step")
    try:
        raise RuntimeError("start-up") from missing
    except RuntimeError as error:
        reason = explain(error, "amqp://payments:secret@rabbitmq:5672/")
    assert reason == "queue payments.order-events.retry is not declared; run the topology step"
