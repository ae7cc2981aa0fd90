"""Kafka contracts: topic names and the command, result, event and dead-letter message models."""
