"""The wallet's consumer of `wallet.commands`: batches in, offsets committed after the work.

A loop of the wallet's own over an aiokafka consumer, pipelined by one batch: while the broker
acknowledges batch N's results and events, batch N+1 is decoded, decided and committed to the
store. The guarantees do not move:

- a batch's offsets are committed only after its store commit and after every message it
  publishes is acknowledged (`acks=all`); offset commits go out in batch order;
- batches are published in order, each only after the previous one's acknowledgements, so a
  user's results and events stay in order on their partitions;
- anything that fails (the store, the broker, the offset commit) sends the consumer back to the
  last committed offsets: what was decided but not yet published comes again and is answered as
  the duplicate it is;
- before its partitions move to another consumer (a rebalance) or the process stops, the batch
  in flight is finished and its offsets committed.

A FastStream broker that is never started describes this channel in the AsyncAPI document
(`describe_command_channel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker

from shared.logging import get_logger
from shared.messaging.topics import PRODUCER_HEADER, Topics
from wallet.application.command_intake import CommandIntake, DecidedBatch, IncomingRecord
from wallet.domain.registry import describe
from wallet.entrypoints.metrics import WalletMetrics

log = get_logger(__name__)

CONSUMER_GROUP = "wallet"
# After a failed batch: wait before the records come again (the store or broker is in trouble).
RETRY_BACKOFF_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

COMMANDS_DESCRIPTION = f"""Wallet commands (key: the payer's user_id), applied once per idempotency
key (type, transaction_type, reference_id). A resend with equal money fields (type,
transaction_type, reference_id, user_id, currency, amount, to_user, fee, destination,
receive_currency, receive_amount, receive_fee, hold_id, counter_hold_id; an absent optional field
counts as its default) is answered `duplicate`; other money fields under a used key are
`idempotency_conflict`. Every command is decided to one balanced set of postings or a recorded
rejection (final for its key) that moves nothing.

Command types:
- credit: `amount` from the transaction type's counterparty into a user bucket (or, for
  liquidity_funding, into platform:liquidity).
- debit: user available → the type's counterparty.
- lock / unlock: available ↔ locked under the hold `hold_id` (default: reference_id). An order or
  trade spent in several steps names its hold and gives each step its own reference_id.
- release_locked: from the hold → external:`destination` (must be the type's counterparty), `fee`
  of it → platform:fees.
- transfer: available → `to_user`'s available. transfer_locked: from the hold → `to_user`'s
  available, `fee` → platform:fees.
- exchange: `amount` of `currency` to platform:liquidity (`fee` of it → platform:fees),
  `receive_amount` of `receive_currency` from platform:liquidity; rejected
  `insufficient_liquidity` if platform:liquidity cannot cover it (it never goes below zero).
- settle_trade: one spot fill, all or nothing: the buyer (`user_id`) pays `amount` of quote
  `currency` from hold `hold_id` to the seller (`to_user`), who receives `amount - fee`; the seller
  delivers `receive_amount` of base `receive_currency` from hold `counter_hold_id` to the buyer,
  who receives `receive_amount - receive_fee`; both fees → platform:fees.
- savings_in / savings_out: available ↔ savings.

Rejection reasons: insufficient_funds, insufficient_liquidity, insufficient_platform_funds,
unknown_transaction_type, same_account, idempotency_conflict (and, for unparseable messages, the
dead-letter reasons).

Registered transaction types (anything else, or another command type, is rejected
`unknown_transaction_type`):

{describe()}
"""


class AssignmentTracker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Knows the partitions the consumer holds (readiness needs one), and finishes the batch in
    flight before any of them is given up."""

    def __init__(self) -> None:
        self.joined = False
        self.partitions: set[TopicPartition] = set()
        self.before_revoke: Callable[[], Awaitable[None]] | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.before_revoke is not None and revoked:
            await self.before_revoke()
        self.partitions -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.partitions |= set(assigned)
        self.joined = True


def _producer(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == PRODUCER_HEADER:
            return value
    return None


def describe_command_channel(broker: KafkaBroker, topics: Topics) -> None:
    """Declare `wallet.commands` on a broker that only describes (AsyncAPI); never started."""

    @broker.subscriber(
        topics.commands,
        group_id=topics.group(CONSUMER_GROUP),
        batch=True,
        title="wallet-commands",
        description=COMMANDS_DESCRIPTION,
    )
    async def consume_wallet_commands(body: Any) -> None:  # pragma: no cover - never started
        raise RuntimeError("the wallet's own command loop consumes wallet.commands")


@dataclass(slots=True)
class _InFlight:
    """A decided (committed) batch whose messages are being published."""

    publishing: asyncio.Task[None]
    decided: DecidedBatch
    offsets: dict[TopicPartition, int]  # next offset to read, per partition


class CommandLoop:
    """Consumes `wallet.commands` in group `wallet`, one batch decided ahead of publishing."""

    def __init__(
        self,
        intake: CommandIntake,
        metrics: WalletMetrics,
        topics: Topics,
        bootstrap_servers: str,
        *,
        max_records: int = 500,
        batch_timeout_ms: int = 50,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
    ) -> None:
        self.tracker = AssignmentTracker()
        self.tracker.before_revoke = self._drain_before_revoke
        self._intake = intake
        self._metrics = metrics
        self._topic = topics.commands
        self._max_records = max_records
        self._batch_timeout_ms = batch_timeout_ms
        self._consumer_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": topics.group(CONSUMER_GROUP),
            "client_id": "wallet",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self._kafka: AIOKafkaConsumer | None = None  # made in start(): it needs a running loop
        # Held while a batch is decided, while the one in flight is finished and while a
        # rebalance drains: nobody ever sees a batch half-way.
        self._lock = asyncio.Lock()
        self._in_flight: _InFlight | None = None
        self._committing: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failures = 0
        # Bumped by every rebalance: records fetched before one are not decided after it.
        self._generation = 0
        # Per partition with records decided but not yet committed: the offset to come back to
        # if anything fails (the first such record), and the next offset handed out.
        self._rewind: dict[TopicPartition, int] = {}
        self._handed: dict[TopicPartition, int] = {}

    @property
    def _consumer(self) -> AIOKafkaConsumer:
        if self._kafka is None:
            raise RuntimeError("the command loop is not started")
        return self._kafka

    async def start(self) -> None:
        self._kafka = AIOKafkaConsumer(**self._consumer_options)
        await self._kafka.start()
        self._kafka.subscribe([self._topic], listener=self.tracker)
        self._task = asyncio.create_task(self._run(), name="wallet-command-loop")

    async def stop(self) -> None:
        """Finish the batch in flight, commit its offsets, leave the group."""
        if self._kafka is None:
            return
        self._stopping.set()
        if self._task is not None:
            if not self._lock.locked():
                # Waiting for records (nothing decided yet): safe to interrupt. A batch being
                # decided is let finish; the loop stops after it.
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            try:
                await self._drain()
            except Exception:
                log.exception("command_batch_not_committed_at_stop")
        await self._kafka.stop()
        self._kafka = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            generation = self._generation
            try:
                fetched = await self._consumer.getmany(
                    timeout_ms=self._batch_timeout_ms, max_records=self._poll_size()
                )
            except Exception:
                log.exception("command_fetch_failed")
                await asyncio.sleep(RETRY_BACKOFF_SECONDS[-1])
                continue
            async with self._lock:
                if self._stopping.is_set():
                    continue  # not decided: read again by whoever holds the partitions next
                try:
                    if generation != self._generation:
                        # Fetched around a rebalance: maybe before it, maybe from the new
                        # assignment's committed offsets. Not decided; read again from the
                        # committed offsets by whoever holds each partition now (this process
                        # included).
                        await self._seek_back(fetched)
                    elif fetched:
                        await self._handle(fetched)
                    else:
                        await self._finish_in_flight()
                    self._failures = 0
                except Exception:
                    try:
                        await self._recover()
                    except Exception:
                        log.exception("command_recovery_failed")

    def _poll_size(self) -> int:
        # No more records than one store commit carries: when a slow database has made the
        # ledger split its batches, each commit's offsets are committed before the next batch is
        # decided. A poll of many commits would commit its offsets only after all of them, and
        # a process dropped from the group meanwhile (its poll interval passed) would do all of
        # them again, and again, without moving its offsets.
        limit = self._intake.records_per_commit
        return self._max_records if limit is None else max(1, min(limit, self._max_records))

    async def _handle(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        records = [
            IncomingRecord(r.value, r.key, r.topic, r.partition, r.offset, _producer(r.headers))
            for batch in fetched.values()
            for r in batch
        ]
        offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
        for tp, batch in fetched.items():
            if batch:
                self._rewind.setdefault(tp, batch[0].offset)
        self._handed.update(offsets)
        try:
            decided = await self._intake.decide(records)  # committed in the store from here on
        except Exception:
            with contextlib.suppress(Exception):
                await self._finish_in_flight()  # the batch before is good: let it through
            raise
        await self._finish_in_flight()  # the previous batch: acknowledged, then its offsets
        publishing = asyncio.create_task(self._publish(decided))
        self._in_flight = _InFlight(publishing, decided, offsets)
        # Let the publisher hand its record batches to the producer's sender now, so that they
        # are on the wire while the next batch is decided (the loop is busy until then).
        for _ in range(3):
            await asyncio.sleep(0)

    async def _publish(self, decided: DecidedBatch) -> None:
        await self._intake.publish(decided)
        # Counted as soon as its results are out: whoever reads a result may read the metrics.
        self._metrics.observe(decided.report)

    async def _finish_in_flight(self) -> None:
        """Await the batch in flight's acknowledgements, then commit its offsets (in order)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        waiting_since = time.perf_counter()
        try:
            await in_flight.publishing
        except BaseException:
            self._in_flight = in_flight  # still to be discarded by the recovery
            raise
        await self._await_commit()  # the previous commit first: offsets only move forward
        self._metrics.broker_wait_seconds.observe(time.perf_counter() - waiting_since)
        self._committing = asyncio.create_task(self._commit(in_flight.offsets))

    async def _await_commit(self) -> None:
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        for tp, committed in offsets.items():
            if self._handed.get(tp, committed) > committed:
                self._rewind[tp] = committed  # a later batch from here is still in the air
            else:
                self._rewind.pop(tp, None)
                self._handed.pop(tp, None)

    async def _drain(self) -> None:
        await self._finish_in_flight()
        await self._await_commit()

    async def _drain_before_revoke(self) -> None:
        """A rebalance takes the partitions: finish and commit while they are still ours."""
        async with self._lock:
            self._generation += 1
            try:
                await self._drain()
            except Exception:
                log.exception("command_batch_not_committed_before_rebalance")
                self._discard_in_flight()
            # Whatever is not committed now is read again from the committed offsets by the
            # partitions' next holders (this process included): nothing to rewind here.
            self._rewind.clear()
            self._handed.clear()

    async def _seek_back(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        """Back to the committed offset (the group's beginning if none) of each partition these
        records came from that is still ours: not to where they start, which is past a batch
        whose drain failed before the rebalance and that must come again."""
        assigned = self._consumer.assignment()
        for tp, batch in fetched.items():
            if batch and tp in assigned:
                committed = await self._consumer.committed(tp)
                if committed is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, committed)

    def _discard_in_flight(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and not in_flight.publishing.done():
            in_flight.publishing.cancel()

    async def _recover(self) -> None:
        """Something failed: go back to the first offset not committed and try again, after a
        pause. Decided batches are already in the store: coming again, they are answered as the
        duplicates they are and their messages published then. Nothing skipped, nothing twice."""
        self._metrics.batch_failures.inc()
        log.exception("command_batch_failed")
        self._discard_in_flight()
        try:
            await self._await_commit()
        except Exception:
            log.exception("command_offsets_not_committed")
        assigned = self._consumer.assignment()
        for tp, offset in self._rewind.items():
            if tp in assigned:  # one given up meanwhile is read from its committed offset
                self._consumer.seek(tp, offset)
        self._rewind.clear()
        self._handed.clear()
        delay = RETRY_BACKOFF_SECONDS[min(self._failures, len(RETRY_BACKOFF_SECONDS) - 1)]
        self._failures += 1
        await asyncio.sleep(delay)
