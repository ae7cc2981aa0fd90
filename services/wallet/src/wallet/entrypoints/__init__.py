"""How the wallet is driven: Kafka consumer, HTTP API, ops CLI."""
