"""Both designs on the same MongoDB in the same run: the batch ledger and the seed's design.

MongoDB commands sent per ledger command are counted by PyMongo command monitoring: the count does
not depend on the machine or on which MongoDB answers, so the embedded stand-in gives the same
figure as a real replica set. Commands/s are measured too, on whichever MongoDB answers: on the
stand-in they say how the two designs compare on it (both sides on the same slow server), not
what a real database does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from bench.seed_wallet import DECIMAL_CODEC_OPTIONS, TransactionalSeedWallet
from bench.workload import Balances, WalletKey, Workload
from shared.messaging import CommandResult, DeadLetter, LedgerTransaction, WalletCommand, encode
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
        producers: Mapping[str, bytes],
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
    wrong: list[str] = field(default_factory=list)  # outcomes and balances against the model

    @property
    def round_trips(self) -> int:
        return sum(self.by_name.values())

    @property
    def round_trips_per_command(self) -> float:
        return self.round_trips / self.commands

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds


def _balances_of(documents: Sequence[Any]) -> dict[WalletKey, Balances]:
    return {
        (d["user_id"], d["currency"]): (
            d["available_balance"],
            d["locked_balance"],
            d["total_balance"],
        )
        for d in documents
    }


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
        outcome_of: dict[str, str] = {}
        counter.counting = True
        started = time.perf_counter()
        for first in range(0, len(records), batch_size):
            report = await intake.process(records[first : first + batch_size])
            outcome_of.update((r.command_id, r.status) for _, r in report.batch.results)
        seconds = time.perf_counter() - started
        counter.counting = False
        run = MongoRun(len(records), seconds, counter.by_name, Counter(outcome_of.values()))
        balances = {
            (r.user_id, r.currency): (r.balances.available, r.balances.locked, r.balances.total)
            async for r in store.all_wallets()
        }
        run.wrong = workload.wrong_outcomes(outcome_of) + workload.wrong_balances(balances)
        return run
    finally:
        await client.drop_database(name)
        await client.close()


async def run_seed_on_mongo(
    url: str, workload: Workload, *, handlers: int = 16, serialise: bool
) -> MongoRun:
    """The seed's design: one MongoDB transaction per call, `handlers` request handlers at a time.

    A user's calls come one after another (a person waits for the answer before the next click),
    so each handler takes the commands of its own users, in order, like a partition.
    """
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
        seed = TransactionalSeedWallet(client, db, serialise=serialise)
        queues: list[list[WalletCommand]] = [[] for _ in range(handlers)]
        for command in workload.parsed():
            queues[zlib.crc32(command.user_id.encode()) % handlers].append(command)
        outcome_of: dict[str, str] = {}

        async def handler(queue: list[WalletCommand]) -> None:
            for command in queue:
                outcome_of[command.command_id] = (await seed.handle(command)).status

        counter.counting = True
        started = time.perf_counter()
        await asyncio.gather(*(handler(q) for q in queues))
        seconds = time.perf_counter() - started
        counter.counting = False
        run = MongoRun(len(workload), seconds, counter.by_name, Counter(outcome_of.values()))
        balances = _balances_of(await wallets.find({}).to_list())
        run.wrong = workload.wrong_outcomes(outcome_of, seed=True) + workload.wrong_balances(
            balances
        )
        return run
    finally:
        await client.drop_database(name)
        await client.close()
