"""The local platform: every service as a process, a trace sink, and `make traces`."""
