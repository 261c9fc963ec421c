"""The reference order flow's shared contract: its events and the queues that carry them."""
