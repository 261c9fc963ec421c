"""notifier: tells the customer how their order ended."""
