"""`make demo`: the seed's phase-4 checklist against a running `make run`."""
