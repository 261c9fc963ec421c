"""Which queue receives which events. Every service declares all of it at start-up."""

from lantern_runtime.messaging import QueueSpec, Topology

# payments also hears of cancelled orders, to void what it may have authorized.
PAYMENTS_QUEUE = QueueSpec("payments.order-events", ("order.created", "order.cancelled"))
ORDERS_QUEUE = QueueSpec("orders.payment-results", ("payment.authorized", "payment.declined"))
NOTIFIER_QUEUE = QueueSpec("notifier.order-outcomes", ("order.confirmed", "order.cancelled"))

ORDER_FLOW = Topology((PAYMENTS_QUEUE, ORDERS_QUEUE, NOTIFIER_QUEUE))
