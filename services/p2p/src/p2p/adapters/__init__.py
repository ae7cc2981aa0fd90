"""Adapters: MongoDB and in-memory stores, the wallet command publisher."""
