"""Database cost: MongoDB commands sent per ledger command, counted by PyMongo command monitoring.

The count does not depend on the machine or on which MongoDB answers, so the embedded stand-in
gives the same figure as a real replica set. Its timings are another matter: they are recorded
only when a real MongoDB was configured (the stand-in is not a database to time).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pymongo import ASCENDING, IndexModel
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from bench.seed_wallet import DECIMAL_CODEC_OPTIONS, SeedWalletService
from bench.workload import Workload
from shared.messaging import CommandResult, DeadLetter, LedgerTransaction, encode
from shared.mongo import connect
from wallet.adapters.mongo_store import MongoLedgerStore
from wallet.application.command_intake import CommandIntake, IncomingRecord
from wallet.application.ledger_service import LedgerService


class CommandCounter(CommandListener):
    """Counts the commands the client sends while `counting` is on, by command name."""

    def __init__(self) -> None:
        self.counting = False
        self.by_name: Counter[str] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        if self.counting:
            self.by_name[event.command_name] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    @property
    def total(self) -> int:
        return sum(self.by_name.values())


class EncodingPublisher:
    """Stands in for Kafka: does the encoding work of publishing, sends nothing."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
    ) -> None:
        for message in [*(r for _, r in results), *events, *(d for _, d in dead_letters)]:
            encode(message)
            self.published += 1


@dataclass(slots=True)
class MongoRun:
    commands: int
    seconds: float
    by_name: Counter[str]
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def round_trips(self) -> int:
        return sum(self.by_name.values())

    @property
    def round_trips_per_command(self) -> float:
        return self.round_trips / self.commands


async def run_ledger_on_mongo(url: str, workload: Workload, batch_size: int = 500) -> MongoRun:
    """Records → ledger → (encoded) results through `CommandIntake`, on the MongoDB store."""
    counter = CommandCounter()
    client = connect(url, event_listeners=[counter])
    name = f"bench_ledger_{uuid.uuid4().hex[:10]}"
    try:
        store = MongoLedgerStore(client[name])
        await store.ensure_indexes()
        intake = CommandIntake(LedgerService(store), EncodingPublisher())
        records = [
            IncomingRecord(workload.encoded(i), c["user_id"].encode(), "wallet.commands", 0, i)
            for i, c in enumerate(workload.commands)
        ]
        statuses: Counter[str] = Counter()
        counter.counting = True
        started = time.perf_counter()
        for first in range(0, len(records), batch_size):
            report = await intake.process(records[first : first + batch_size])
            statuses.update(result.status for _, result in report.batch.results)
        seconds = time.perf_counter() - started
        counter.counting = False
        return MongoRun(len(records), seconds, counter.by_name, statuses)
    finally:
        await client.drop_database(name)
        await client.close()


async def run_seed_on_mongo(url: str, workload: Workload) -> MongoRun:
    """The seed's calls, one command at a time, through PyMongo."""
    counter = CommandCounter()
    client = connect(url, event_listeners=[counter])
    name = f"bench_seed_{uuid.uuid4().hex[:10]}"
    try:
        db = client.get_database(name, codec_options=DECIMAL_CODEC_OPTIONS)
        wallets, transactions = db["wallets"], db["wallet_transactions"]
        # The indexes the seed's lookups need, made before counting starts.
        await wallets.create_indexes(
            [IndexModel([("user_id", ASCENDING), ("currency", ASCENDING)], unique=True)]
        )
        await transactions.create_indexes(
            [IndexModel([("reference_id", ASCENDING), ("transaction_type", ASCENDING)])]
        )
        seed = SeedWalletService(wallets, transactions)
        commands = workload.parsed()
        statuses: Counter[str] = Counter()
        counter.counting = True
        started = time.perf_counter()
        for command in commands:
            statuses[(await seed.handle(command)).status] += 1
        seconds = time.perf_counter() - started
        counter.counting = False
        return MongoRun(len(commands), seconds, counter.by_name, statuses)
    finally:
        await client.drop_database(name)
        await client.close()
