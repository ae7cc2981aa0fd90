"""Drivers behind the ports: MongoDB, Kafka (WalletClient), NOWPayments over HTTP, in-memory fakes."""
