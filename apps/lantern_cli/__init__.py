"""lantern, the operator CLI: status, traces, smoke, dead letters and tokens, locally or in a cluster."""
