"""bank: a small payment-provider simulator that authorizes amounts up to a limit."""
