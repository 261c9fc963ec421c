"""Which queue receives which events. Every service declares all of it at start-up."""

from lantern_runtime.messaging import QueueSpec, Topology

PAYMENTS_QUEUE = QueueSpec("payments.order-created", ("order.created",))
ORDERS_QUEUE = QueueSpec("orders.payment-results", ("payment.authorized", "payment.declined"))
NOTIFIER_QUEUE = QueueSpec("notifier.order-outcomes", ("order.confirmed", "order.cancelled"))

ORDER_FLOW = Topology((PAYMENTS_QUEUE, ORDERS_QUEUE, NOTIFIER_QUEUE))
