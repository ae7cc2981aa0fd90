"""Use cases of the wallet: the batch handler, queries, replay and verify. Talks to ports only."""
