"""A consumer group on `wallet.events`: every ledger transaction, in order per partition, at
least once, handed to one handler (savings history, referral commissions — each its own group).

Offsets are committed only after a batch is handled, so a crash replays it: a handler must be
idempotent. `caught_up` lets a job wait until everything the ledger had published when it was
asked has been handled (by whichever member of the group owns each partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError

from shared.messaging import LedgerTransaction

log = structlog.get_logger(__name__)

RETRY_DELAY_SECONDS: Final = 1.0
TransactionHandler = Callable[[LedgerTransaction], Awaitable[None]]


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.joined.set()


class LedgerEventsConsumer:
    def __init__(
        self,
        bootstrap_servers: str,
        handle: TransactionHandler,
        *,
        topic: str,
        group_id: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self._handle = handle
        self._topic = topic
        self._group_id = group_id
        self._assignment = _Assignment()
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            # A new group reads the ledger's whole published history: that IS the derivation.
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def assigned(self) -> bool:
        running = self._task is not None and not self._task.done()
        return running and self._assignment.joined.is_set()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._options)
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self._assignment)
        self._task = asyncio.create_task(self._run(), name=f"ledger-events-{self._group_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def caught_up(self, within: float) -> bool:
        """True once the group has handled (committed) every event published before this call,
        on every partition; False if that did not happen within `within` seconds."""
        consumer = self._consumer
        if consumer is None:
            return False
        await consumer.topics()  # refreshes the cluster's metadata
        partitions = [
            TopicPartition(self._topic, p)
            for p in sorted(consumer.partitions_for_topic(self._topic) or ())
        ]
        if not partitions:
            return True
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + within
        while True:
            behind = []
            for tp in partitions:
                if ends[tp] == 0:
                    continue
                committed = await consumer.committed(tp)
                if committed is None or committed < ends[tp]:
                    behind.append(tp.partition)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning("ledger_events.behind", group=self._group_id, partitions=behind)
                return False
            await asyncio.sleep(0.2)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=200)
            for records in batches.values():
                for record in records:
                    transaction = _read(record.value)
                    if transaction is not None:
                        await self._apply(transaction)
            if batches:
                try:
                    await self._consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their next owner re-reads them.
                    log.warning("ledger_events.commit_failed_after_rebalance")

    async def _apply(self, transaction: LedgerTransaction) -> None:
        # A failure is the database or the broker being away: retry, never skip an event (a
        # commission would be lost, a balance history would have a hole).
        while True:
            try:
                await self._handle(transaction)
                return
            except Exception:
                log.exception(
                    "ledger_events.apply_failed",
                    group=self._group_id,
                    transaction=transaction.transaction_id,
                )
                await asyncio.sleep(RETRY_DELAY_SECONDS)


def _read(value: bytes | None) -> LedgerTransaction | None:
    if value is None:
        return None
    try:
        return LedgerTransaction.model_validate_json(value)
    except ValidationError:
        log.warning("ledger_events.unreadable", value=value[:200])
        return None
