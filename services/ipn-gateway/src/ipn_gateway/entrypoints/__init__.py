"""Ways in: the HTTP API and the consumer of the wallet's results."""
