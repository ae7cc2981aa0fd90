"""Topic names of the public contract (CONTRACT.md, "Kafka topics")."""

from typing import Final

WALLET_COMMANDS: Final = "wallet.commands"
WALLET_RESULTS: Final = "wallet.results"
WALLET_EVENTS: Final = "wallet.events"
WALLET_COMMANDS_DLQ: Final = "wallet.commands.dlq"

ALL_TOPICS: Final = (WALLET_COMMANDS, WALLET_RESULTS, WALLET_EVENTS, WALLET_COMMANDS_DLQ)

# Per-partition order is per-user order; more partitions let more wallet consumers share the load.
DEFAULT_PARTITIONS: Final = 6
