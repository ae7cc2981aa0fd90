"""Topic names of the public contract (CONTRACT.md, "Kafka topics")."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

WALLET_COMMANDS: Final = "wallet.commands"
WALLET_RESULTS: Final = "wallet.results"
WALLET_EVENTS: Final = "wallet.events"
WALLET_COMMANDS_DLQ: Final = "wallet.commands.dlq"
# Wave 2: prices from the trading service (key = currency) and spot orders (key = market).
MARKET_PRICES: Final = "market.prices"
TRADING_ORDERS: Final = "trading.orders"

ALL_TOPICS: Final = (
    WALLET_COMMANDS,
    WALLET_RESULTS,
    WALLET_EVENTS,
    WALLET_COMMANDS_DLQ,
    MARKET_PRICES,
    TRADING_ORDERS,
)

# A Kafka header on commands naming the service that sent them (`WalletClient(producer=...)`); the
# wallet copies it onto the command's result, so each producer reads only its own results without
# decoding anyone else's. Results of commands sent without it carry none.
PRODUCER_HEADER: Final = "producer"
# What the wallet copies back: at most this many bytes of printable ASCII. A header is not bounded
# by the broker's message limit the way the result it is copied onto is (a compressed command may
# carry megabytes of it), and a result the broker refuses as too large would fail its batch on
# every delivery. Any other header is dropped: the result then reaches every client.
PRODUCER_HEADER_MAX_BYTES: Final = 128
_USABLE_PRODUCER: Final = re.compile(rb"[\x21-\x7e]{1,%d}" % PRODUCER_HEADER_MAX_BYTES)


def usable_producer(header: bytes | None) -> bytes | None:
    """The `producer` header as a result may carry it back, or None for one it may not."""
    if header is None or _USABLE_PRODUCER.fullmatch(header) is None:
        return None
    return header


# Per-partition order is per-user order; more partitions let more wallet consumers share the load.
DEFAULT_PARTITIONS: Final = 6

# Settings a contract topic is created with, beyond the broker's defaults. `wallet.events` is kept
# for ever: read models are built from its first offset (trading's savings history and referral
# commissions), and a consumer group started after Kafka's default 7 days would find the oldest
# movements deleted and pay on balances that miss them.
TOPIC_CONFIGS: Final[Mapping[str, Mapping[str, str]]] = {WALLET_EVENTS: {"retention.ms": "-1"}}


def topic_configs(topic: str) -> dict[str, str]:
    """The settings `topic` (the contract's name, under any prefix) is created with."""
    for name, configs in TOPIC_CONFIGS.items():
        if topic.endswith(name):
            return dict(configs)
    return {}


@dataclass(frozen=True, slots=True)
class Topics:
    """The contract's topic names, optionally under a prefix (`KAFKA_TOPIC_PREFIX`).

    Production uses no prefix. A prefix lets several independent deployments, or test modules,
    share one broker without reading each other's commands.
    """

    prefix: str = ""

    @property
    def commands(self) -> str:
        return self.prefix + WALLET_COMMANDS

    @property
    def results(self) -> str:
        return self.prefix + WALLET_RESULTS

    @property
    def events(self) -> str:
        return self.prefix + WALLET_EVENTS

    @property
    def dead_letters(self) -> str:
        return self.prefix + WALLET_COMMANDS_DLQ

    @property
    def prices(self) -> str:
        return self.prefix + MARKET_PRICES

    @property
    def orders(self) -> str:
        return self.prefix + TRADING_ORDERS

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(self.prefix + topic for topic in ALL_TOPICS)

    def group(self, name: str) -> str:
        """A consumer group's id, under the same prefix: deployments that share a broker share
        no group either (no rebalances of one caused by the other)."""
        return self.prefix + name


CONTRACT_TOPICS: Final = Topics()
