"""Adapters to the outside: MongoDB and in-memory stores, the Kafka publisher."""
