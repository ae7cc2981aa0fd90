"""The wallet's pipelined command loop over the real (embedded) broker: a batch's offsets are
committed only after its store commit and its messages' acknowledgements, and every failure, stop
or rebalance sends the loop back to the first offset not committed, so nothing is skipped and
nothing applied twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal as D
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.wallet.tests.integration.kafka_reading import results_so_far
from shared.infra import ensure_topics, offsets_committed
from shared.messaging import CommandResult, DeadLetter, LedgerTransaction
from shared.messaging.topics import Topics
from wallet.adapters.kafka_publisher import KafkaOutcomePublisher
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.command_intake import CommandIntake, DecidedBatch, IncomingRecord
from wallet.application.ledger_service import LedgerService
from wallet.application.ports import TransientStoreError
from wallet.domain.records import LedgerBatch
from wallet.entrypoints.consumer import CONSUMER_GROUP, CommandLoop
from wallet.entrypoints.metrics import WalletMetrics

pytestmark = pytest.mark.integration

USERS = 12
BATCH = 25  # small batches: many of them in flight one after another


class GatedPublisher:
    """The real publisher, with publishes that can be made to fail or to wait for a gate."""

    def __init__(self, inner: KafkaOutcomePublisher) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_on: set[int] = set()  # these calls (1-based) raise before publishing anything
        self.hold_on: set[int] = set()  # these calls wait for `gate` before publishing
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()  # set while a call waits at the gate

    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
        producers: Mapping[str, bytes],
    ) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError(f"broker unreachable (publish {self.calls})")
        if self.calls in self.hold_on:
            self.holding.set()
            await self.gate.wait()
            self.holding.clear()
        await self.inner.publish(results, events, dead_letters, producers)


class FlakyStore(InMemoryLedgerStore):
    """Times out on the chosen commits (counted from 1), as a database in trouble does."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0
        self.fail_on: set[int] = set()

    async def commit(self, batch: LedgerBatch) -> None:
        self.commits += 1
        if self.commits in self.fail_on:
            raise TransientStoreError(f"commit {self.commits} timed out")
        await super().commit(batch)


class Harness:
    """Loops, their store and publisher, the commands sent, and what came out."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.store = FlakyStore()
        self.outcomes = KafkaOutcomePublisher(KafkaBroker(bootstrap), topics, bootstrap)
        self.publisher = GatedPublisher(self.outcomes)
        self.loops: list[CommandLoop] = []
        self.expected: dict[str, D] = {}
        self.sent = 0

    def loop(self, **ledger_options: Any) -> CommandLoop:
        ledger = LedgerService(self.store, **ledger_options)
        return self.loop_over(CommandIntake(ledger, self.publisher))

    def loop_over(self, intake: CommandIntake) -> CommandLoop:
        loop = CommandLoop(
            intake,
            WalletMetrics(CollectorRegistry()),
            self.topics,
            self.bootstrap,
            max_records=BATCH,
            batch_timeout_ms=20,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=500,
        )
        self.loops.append(loop)
        return loop

    async def send_credits(self, count: int, tag: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            sends = []
            for i in range(count):
                user = f"{tag}-user-{i % USERS}"
                amount = D("0.001") * (1 + i % 7)
                self.expected[user] = self.expected.get(user, D(0)) + amount
                command = {
                    "command_id": f"{tag}-cmd-{i}",
                    "type": "credit",
                    "transaction_type": "deposit_nowpayments",
                    "reference_id": f"{tag}-ref-{i}",
                    "user_id": user,
                    "currency": "BTC",
                    "amount": str(amount),
                }
                body = json.dumps(command).encode()
                sends.append(await producer.send(self.topics.commands, body, key=user.encode()))
            await asyncio.gather(*sends)
            self.sent += count
        finally:
            await producer.stop()

    async def committed(self) -> int:
        """The sum of the group's committed offsets over the partitions of wallet.commands."""
        return await offsets_committed(
            self.bootstrap, self.topics.prefix + CONSUMER_GROUP, self.topics.commands
        )

    async def results(self) -> list[CommandResult]:
        return await results_so_far(self.bootstrap, self.topics.results)

    async def wait_committed(self, within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while await self.committed() < self.sent:
                await asyncio.sleep(0.1)

    async def balances(self) -> dict[str, D]:
        found: dict[str, D] = {}
        for user in self.expected:
            for wallet in await self.store.wallets_of(user):
                found[user] = wallet.balances.available
        return found

    async def check_exactly_once(self) -> Counter[str]:
        """Every command answered, every balance as if each command was applied once; the count
        of each status on wallet.results."""
        results = await self.results()
        answered = {r.command_id for r in results}
        assert len(answered) == self.sent, f"{self.sent - len(answered)} commands unanswered"
        assert await self.balances() == self.expected
        assert await self.committed() == self.sent
        return Counter(r.status for r in results)


@pytest_asyncio.fixture(loop_scope="session")
async def harness(kafka_bootstrap_servers: str) -> AsyncIterator[Harness]:
    # Topics of this test's own: each test starts from an empty group and empty topics.
    topics = Topics(prefix=f"loop.{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka_bootstrap_servers, topics.all)
    h = Harness(kafka_bootstrap_servers, topics)
    await h.outcomes.start()
    try:
        yield h
    finally:
        for loop in h.loops:
            await loop.stop()
        await h.outcomes.stop()


async def started(loop: CommandLoop, within: float = 30.0) -> CommandLoop:
    await loop.start()
    async with asyncio.timeout(within):
        while not loop.tracker.partitions:
            await asyncio.sleep(0.05)
    return loop


async def test_every_batch_is_committed_after_its_publish_and_in_order(harness: Harness) -> None:
    await started(harness.loop())
    await harness.send_credits(300, "plain")
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    assert statuses == Counter({"applied": 300})
    assert harness.publisher.calls >= 300 // BATCH  # it ran batch by batch, not in one go


async def test_offsets_wait_for_the_acknowledgements_while_the_next_batch_is_decided(
    harness: Harness,
) -> None:
    harness.publisher.hold_on = {3}
    await started(harness.loop())
    await harness.send_credits(300, "held")
    async with asyncio.timeout(30):
        await harness.publisher.holding.wait()
    await asyncio.sleep(1.0)  # time for the loop to decide the next batch, and to commit wrongly
    committed_while_held = await harness.committed()
    decided_while_held = harness.store.commits
    harness.publisher.gate.set()
    await harness.wait_committed()
    await harness.check_exactly_once()
    # Two batches published before the held one: their offsets and nothing after them.
    assert committed_while_held <= 2 * BATCH
    # Pipelined: the batch after the held one was decided (committed to the store) meanwhile.
    assert decided_while_held == 4


async def test_a_failed_publish_sends_the_loop_back_to_the_first_offset_not_committed(
    harness: Harness,
) -> None:
    harness.publisher.fail_on = {3}
    await started(harness.loop())
    await harness.send_credits(300, "pubfail")
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    # The failed batch and the one decided behind it came again and were answered duplicate.
    assert statuses["duplicate"] >= BATCH
    assert statuses["applied"] == 300 - statuses["duplicate"]


async def test_a_store_failure_sends_the_batch_again(harness: Harness) -> None:
    harness.store.fail_on = {2, 5, 6}
    # No retry inside the ledger: the failure reaches the loop, which must read the batch again.
    await started(harness.loop(max_attempts=1, split_after=99))
    await harness.send_credits(300, "storefail")
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    # Nothing of a failed commit was stored, so the batch comes again as new: no duplicates.
    assert statuses == Counter({"applied": 300})


async def test_stop_finishes_the_batch_in_flight_and_commits_it(harness: Harness) -> None:
    harness.publisher.hold_on = {2}
    loop = await started(harness.loop())
    await harness.send_credits(200, "stop")
    async with asyncio.timeout(30):
        await harness.publisher.holding.wait()
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0.5)
    assert not stopping.done(), "stop did not wait for the batch in flight"
    harness.publisher.gate.set()
    await stopping
    harness.loops.remove(loop)
    decided = harness.store.commits
    # Whatever was decided is published and committed: a restart finds no duplicate to answer.
    await started(harness.loop())
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    assert decided >= 2
    assert statuses == Counter({"applied": 200})


async def test_a_rebalance_finishes_the_batch_in_flight_before_the_partitions_move(
    harness: Harness,
) -> None:
    harness.publisher.hold_on = {3}
    await started(harness.loop())
    await harness.send_credits(300, "rebalance")
    async with asyncio.timeout(30):
        await harness.publisher.holding.wait()
    second = harness.loop()
    await second.start()  # joins the group: the first must give partitions up
    await asyncio.sleep(1.0)
    harness.publisher.gate.set()
    async with asyncio.timeout(60):
        while not second.tracker.partitions:
            await asyncio.sleep(0.05)
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    # The first loop published and committed its decided batches before letting go: the second
    # started from there and met no command already applied.
    assert statuses == Counter({"applied": 300})


async def test_records_fetched_around_a_rebalance_are_read_again_from_the_committed_offset(
    harness: Harness,
) -> None:
    """A batch whose drain failed before a rebalance left its offsets uncommitted: records fetched
    after it must not move the partition past it. Each partition goes back to its committed
    offset, or to the beginning if the group never committed one."""
    loop = await started(harness.loop())
    await harness.send_credits(120, "seekback")
    await harness.wait_committed()
    kafka = loop._consumer
    assigned = sorted(kafka.assignment(), key=lambda tp: tp.partition)
    committed_at = {tp: await kafka.committed(tp) for tp in assigned}
    first = next(tp for tp, offset in committed_at.items() if offset and offset >= 3)
    never = next(tp for tp, offset in committed_at.items() if offset is None)
    # Pretend the last 3 committed records of `first` were decided but never committed (a drain
    # that failed), and that the records after them were fetched meanwhile.
    behind = committed_at[first] - 3
    await kafka.commit({first: behind})
    fetched = {first: [_Fetched(committed_at[first])], never: [_Fetched(5)]}
    await loop._seek_back(fetched)
    assert await kafka.position(first) == behind
    assert await kafka.position(never) == 0  # never committed: the group's beginning
    # The three come again: answered as the duplicates they are, committed again.
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    assert statuses["duplicate"] == 3


class _Fetched:
    """What the loop reads of a fetched record to seek back: its offset."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class SizeRecordingIntake(CommandIntake):
    """The real intake, noting how many records each batch it decides holds."""

    def __init__(self, ledger: LedgerService, publisher: GatedPublisher) -> None:
        super().__init__(ledger, publisher)
        self.sizes: list[int] = []

    async def decide(self, records: Sequence[IncomingRecord]) -> DecidedBatch:
        self.sizes.append(len(records))
        return await super().decide(records)


async def test_a_slow_database_makes_each_poll_one_commit_so_its_offsets_follow_it(
    harness: Harness,
) -> None:
    """Once the ledger commits at most N commands at a time (it split a batch the database ran
    out of time on), the loop reads at most N records per batch: each commit's offsets are
    committed before the next batch is decided, instead of after a whole poll of commits."""
    ledger = LedgerService(harness.store, grow_after=10_000)
    ledger.commit_limit = 5  # as a split leaves it
    intake = SizeRecordingIntake(ledger, harness.publisher)
    loop = harness.loop_over(intake)
    # Everything waits on the broker before the loop starts: a poll could take BATCH at once.
    await harness.send_credits(120, "slowdb")
    await started(loop)
    await harness.wait_committed()
    statuses = await harness.check_exactly_once()
    assert statuses == Counter({"applied": 120})
    assert sum(intake.sizes) == 120
    assert max(intake.sizes) == 5, intake.sizes
