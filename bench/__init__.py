"""Lantern's benchmark suite: variants side by side, each in its own process, alternated over rounds.

`python -m bench [consumer|http|e2e|memory|all] [--rounds N] [--quick]`; results go to stdout as
tables and to bench/results/ as JSON.
"""
