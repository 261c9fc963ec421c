"""Which queue receives which events. Every service declares all of it at start-up.

Adding a queue is one line here: `NAME_QUEUE = work_queue("<service>.<what>", "<event>", ...)`,
above ORDER_FLOW, which holds every queue made with work_queue (`lantern new-service` writes it).
"""

from lantern_runtime.messaging import QueueSpec, Topology

_QUEUES: list[QueueSpec] = []


def work_queue(name: str, *event_types: str) -> QueueSpec:
    """A work queue bound to `event_types`, and a part of ORDER_FLOW."""
    spec = QueueSpec(name, event_types)
    _QUEUES.append(spec)
    return spec


# payments also hears of cancelled orders, to void what it may have authorized.
PAYMENTS_QUEUE = work_queue("payments.order-events", "order.created", "order.cancelled")
ORDERS_QUEUE = work_queue("orders.payment-results", "payment.authorized", "payment.declined")
NOTIFIER_QUEUE = work_queue("notifier.order-outcomes", "order.confirmed", "order.cancelled")

ORDER_FLOW = Topology(tuple(_QUEUES))
