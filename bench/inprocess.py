"""Handling cost in one process: the batch ledger and the seed's design, on the same commands.

Both sides start from decoded commands and end with the outcome stored: nothing of Kafka is in
here. The ledger runs `LedgerService.handle_batch` over `InMemoryLedgerStore`; the seed runs its
calls over `MemoryCollection`. Both stores count the round trips a database would have served, so
the time a real database adds can be charged on top (see `modelled_per_s`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from bench.seed_wallet import memory_seed_wallet
from shared.messaging import WalletCommand
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ledger_service import LedgerService


@dataclass(slots=True)
class Handled:
    commands: int
    seconds: float  # wall time of the handling alone
    round_trips: int
    statuses: Counter[str] = field(default_factory=Counter)
    balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # available, by wallet

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds

    @property
    def round_trips_per_command(self) -> float:
        return self.round_trips / self.commands


def modelled_per_s(
    seconds_per_command: float, round_trips_per_command: float, rtt_s: float
) -> float:
    """Throughput of one sequential writer once each round trip costs `rtt_s` of waiting."""
    return 1.0 / (seconds_per_command + round_trips_per_command * rtt_s)


async def run_ledger(commands: list[WalletCommand], batch_size: int) -> Handled:
    store = InMemoryLedgerStore()
    ledger = LedgerService(store)
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    for first in range(0, len(commands), batch_size):
        report = await ledger.handle_batch(commands[first : first + batch_size])
        statuses.update(result.status for _, result in report.results)
    seconds = time.perf_counter() - started
    balances = {key: record.balances.available for key, record in store.wallets.items()}
    return Handled(len(commands), seconds, store.round_trips, statuses, balances)


async def run_seed(commands: list[WalletCommand]) -> Handled:
    seed, wallets, transactions = memory_seed_wallet()
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    for command in commands:
        statuses[(await seed.handle(command)).status] += 1
    seconds = time.perf_counter() - started
    balances = {(d["user_id"], d["currency"]): d["available_balance"] for d in wallets.all()}
    round_trips = wallets.round_trips + transactions.round_trips
    return Handled(len(commands), seconds, round_trips, statuses, balances)
