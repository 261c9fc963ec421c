"""payments: asks the bank to authorize each new order and announces the result."""
