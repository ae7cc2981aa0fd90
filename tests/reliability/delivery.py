"""A seeded, Kafka-like delivery simulator around the wallet's real batch logic.

The wallet's consumer is `CommandIntake` + `LedgerService` over the in-memory store; here it reads
from a fake broker instead of Kafka and publishes to a fake one. Everything that can go wrong in
delivery goes wrong, at random but from one seed:

- the producers' sends race, so messages of different keys are reordered within a window (never
  two of one key: Kafka keeps a key's order, and the ledger relies on it);
- 20 % of messages are written twice (a producer retry), some resent as new messages;
- a few requests reuse another's idempotency key with another payload, and a few are poison;
- the consumer crashes before the DB commit, between the commit and publishing (also halfway
  through publishing), and between publishing and the offset commit; a new consumer then
  resumes from the last committed offsets, as a Kafka group member does after a rebalance.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from shared.messaging import (
    MONEY_FIELDS,
    CommandResult,
    CreditCommand,
    DeadLetter,
    LedgerTransaction,
    WalletCommand,
    encode,
)
from tests.reliability.commands import (
    CURRENCIES,
    USERS,
    conflicting,
    order_fill_specs,
    random_spec,
    resend,
)
from tests.reliability.commands import make_command as command_from
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.command_intake import CommandIntake, IncomingRecord
from wallet.application.ledger_service import LedgerService
from wallet.application.ports import TransientStoreError
from wallet.domain.records import IdempotencyKey, LedgerBatch, Outcome

TOPIC: Final = "wallet.commands"
PARTITIONS: Final = 2  # crc32 puts alice and carol on one partition, bob on the other
REORDER_WINDOW: Final = 8
DUPLICATE_RATE: Final = 0.20  # messages written twice, same bytes
RESEND_RATE: Final = 0.05  # requests sent again as a new message (new command_id)
CONFLICT_RATE: Final = 0.05  # another payload under an earlier request's key
TRADE_RATE: Final = 0.05  # two orders and a fill settled from their holds
CRASH_RATE: Final = 0.08  # per batch, at each of the four crash points
TRANSIENT_RATE: Final = 0.05  # per store read: a failover the ledger must retry through
MAX_CRASHES: Final = 40  # then the consumer is left to finish, so every run ends
CRASH_POINTS: Final = (
    "before_db_commit",
    "after_db_commit",
    "mid_publish",
    "before_offset_commit",
)


class Crash(BaseException):
    """The consumer process dies here; nothing in its memory survives.

    A BaseException, like a kill: no `except Exception` in the code under test may survive it.
    """


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes
    command: WalletCommand | None  # None for poison


@dataclass
class Faults:
    rng: random.Random
    crashes: Counter[str] = field(default_factory=Counter)
    transient: int = 0

    def crash_at(self, point: str) -> None:
        if sum(self.crashes.values()) < MAX_CRASHES and self.rng.random() < CRASH_RATE:
            self.crashes[point] += 1
            raise Crash(point)


class FaultyStore(InMemoryLedgerStore):
    """The reference store, crashing around the commit and failing some reads over. Records every
    commit that happened, in order: the order in which the ledger decided things."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults
        self.committed: list[LedgerBatch] = []

    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        if self.faults.rng.random() < TRANSIENT_RATE:
            self.faults.transient += 1
            raise TransientStoreError("primary stepped down")
        return await super().find_outcomes(keys)

    async def commit(self, batch: LedgerBatch) -> None:
        self.faults.crash_at("before_db_commit")
        await super().commit(batch)
        self.committed.append(batch)
        self.faults.crash_at("after_db_commit")


@dataclass
class FakeOutput:
    """What the wallet published: the output topics as a consumer of them would see them."""

    faults: Faults
    results: list[tuple[str, CommandResult]] = field(default_factory=list)
    events: list[LedgerTransaction] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
        producers: Mapping[str, bytes],
    ) -> None:
        messages: list[object] = [*results, *events, *(d for _, d in dead_letters)]
        # A crash halfway through publishing leaves some of the batch's messages on the broker.
        cut = self.faults.rng.randint(0, len(messages))
        for index, message in enumerate(messages):
            if index == cut:
                self.faults.crash_at("mid_publish")
            if isinstance(message, tuple):
                self.results.append(message)
            elif isinstance(message, LedgerTransaction):
                self.events.append(message)
            else:
                assert isinstance(message, DeadLetter)
                self.dead_letters.append(message)


def partition_of(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


def racing_sends(messages: list[Message], rng: random.Random) -> list[Message]:
    """Reorder within windows, across keys only: a random merge of each key's own sequence."""
    out: list[Message] = []
    for start in range(0, len(messages), REORDER_WINDOW):
        by_key: dict[bytes, list[Message]] = {}
        for message in messages[start : start + REORDER_WINDOW]:
            by_key.setdefault(message.key, []).append(message)
        while by_key:
            key = rng.choice(sorted(by_key))
            out.append(by_key[key].pop(0))
            if not by_key[key]:
                del by_key[key]
    return out


def as_message(command: WalletCommand) -> Message:
    return Message(command.user_id.encode(), encode(command), command)


def poison(rng: random.Random, seed: int) -> list[Message]:
    """One message the ledger can answer (a NaN amount, sender known) and one it cannot."""
    user = rng.choice(USERS)
    nan = {
        "command_id": f"poison-{seed}",
        "type": "credit",
        "reference_id": f"poison-{seed}",
        "transaction_type": "deposit_nowpayments",
        "user_id": user,
        "currency": "BTC",
        "amount": "NaN",
    }
    return [
        Message(user.encode(), json.dumps(nan).encode(), None),
        Message(user.encode(), b'{"type": "credit", "amount": 1e400', None),
    ]


def command_stream(seed: int, distinct: int) -> tuple[list[Message], Counter[str]]:
    """The messages the producers write, in the order the broker receives them."""
    rng = random.Random(seed)
    stats: Counter[str] = Counter()
    requests: list[Message] = []
    for user in USERS:  # opening deposits, so that there is something to move
        for currency in ("BTC", "ETH", "USD"):
            spec = random_spec(rng, f"open-{user}-{currency}")
            spec.update(type="credit", user_id=user, currency=currency, amount="40")
            spec.update(transaction_type="deposit_nowpayments")
            # What other command types carry and a credit does not.
            for field_name in set(MONEY_FIELDS) - set(CreditCommand.model_fields):
                spec.pop(field_name, None)
            requests.append(as_message(command_from(spec)))
    for index in range(distinct):
        # A few shared references make different requests collide on one key.
        reference = f"trade-{rng.randint(0, 3)}" if rng.random() < 0.1 else f"s{seed}-{index}"
        requests.append(as_message(command_from(random_spec(rng, reference))))
        if rng.random() < TRADE_RATE:
            buyer, seller = rng.sample(USERS, 2)
            quote = rng.choice(CURRENCIES)
            specs = order_fill_specs(
                buyer, seller, quote, rng.randint(1, 20), rng.randint(0, 8), f"s{seed}-{index}"
            )
            requests.extend(as_message(command_from(spec)) for spec in specs)
            stats["trades"] += 1
        earlier = rng.choice(requests).command
        assert earlier is not None
        if rng.random() < RESEND_RATE:
            requests.append(as_message(resend(earlier)))
            stats["resent"] += 1
        if rng.random() < CONFLICT_RATE:
            requests.append(as_message(conflicting(earlier)))
            stats["conflicting"] += 1
    for bad in poison(rng, seed):
        requests.insert(rng.randint(0, len(requests)), bad)
    sent = racing_sends(requests, rng)
    stats["reordered"] = sum(a is not b for a, b in zip(sent, requests, strict=True))
    written: list[Message] = []
    retries: list[tuple[int, Message]] = []
    for index, message in enumerate(sent):
        written.append(message)
        if rng.random() < DUPLICATE_RATE:
            retries.append((index + rng.randint(1, REORDER_WINDOW), message))
        for due, again in [r for r in retries if r[0] <= index]:
            written.append(again)
            retries.remove((due, again))
            stats["duplicated"] += 1
    for _, again in retries:
        written.append(again)
        stats["duplicated"] += 1
    return written, stats


@dataclass
class FakeBroker:
    """Partitions, each an append-only log, and the group's committed offsets."""

    log: list[list[tuple[int, Message]]] = field(
        default_factory=lambda: [[] for _ in range(PARTITIONS)]
    )
    committed: list[int] = field(default_factory=lambda: [0] * PARTITIONS)

    def produce(self, message: Message) -> None:
        partition = self.log[partition_of(message.key)]
        partition.append((len(partition), message))

    def fetch(
        self, positions: list[int], max_records: int, rng: random.Random
    ) -> list[IncomingRecord]:
        """Up to max_records from the positions on; partitions interleave, each keeps its order."""
        records: list[IncomingRecord] = []
        while len(records) < max_records:
            ready = [p for p in range(PARTITIONS) if positions[p] < len(self.log[p])]
            if not ready:
                break
            partition = rng.choice(ready)
            offset, message = self.log[partition][positions[partition]]
            positions[partition] += 1
            records.append(IncomingRecord(message.value, message.key, TOPIC, partition, offset))
        return records

    def drained(self) -> bool:
        return all(c == len(p) for c, p in zip(self.committed, self.log, strict=True))


@dataclass
class Simulation:
    seed: int
    messages: list[Message]
    broker: FakeBroker
    store: FaultyStore
    output: FakeOutput
    faults: Faults
    stats: Counter[str]
    delivered: Counter[tuple[int, int]] = field(default_factory=Counter)  # (partition, offset)


def new_consumer(store: FaultyStore, output: FakeOutput) -> CommandIntake:
    """A fresh process: nothing survives a crash but the store and what was published."""
    return CommandIntake(LedgerService(store, backoff_seconds=0, max_attempts=50), output)


async def run(seed: int, distinct: int) -> Simulation:
    messages, stats = command_stream(seed, distinct)
    faults = Faults(random.Random(seed ^ 0x5EED))
    broker, store = FakeBroker(), FaultyStore(faults)
    output = FakeOutput(faults)
    for message in messages:
        broker.produce(message)
    sim = Simulation(seed, messages, broker, store, output, faults, stats)
    intake = new_consumer(store, output)
    positions = list(broker.committed)
    while not broker.drained():
        records = broker.fetch(positions, faults.rng.randint(1, 16), faults.rng)
        sim.delivered.update((r.partition, r.offset) for r in records)
        try:
            await intake.process(records)
            faults.crash_at("before_offset_commit")
        except Crash:
            stats["restarts"] += 1
            intake = new_consumer(store, output)
            positions = list(broker.committed)  # Kafka resumes from the last committed offsets
            continue
        broker.committed = list(positions)
    return sim


def decision_order(store: FaultyStore) -> list[Outcome]:
    """Every decision in the order the ledger committed it."""
    return [outcome for batch in store.committed for outcome in batch.outcomes]
