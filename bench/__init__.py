"""Benchmarks of the ledger pipeline, side by side with the seed's one-command-at-a-time design.

`python -m bench` (or `make bench`) runs the suite, prints a table and writes `build/bench.json`.
"""
