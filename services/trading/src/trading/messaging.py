"""Kafka plumbing shared by the trading features: one producer, the wallet.results consumer and
its dispatcher, and a group-less reader of a topic's recent messages (market.prices)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from pydantic import ValidationError

from shared.messaging import CommandResult

log = structlog.get_logger(__name__)

RETRY_DELAY_SECONDS: Final = 1.0
ResultHandler = Callable[[CommandResult], Awaitable[None]]


class EventPublisher:
    """The process's one Kafka producer for the topics it owns (not wallet.commands: WalletClient)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers, acks="all")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        self._producer = None

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("EventPublisher is not started")
        await self._producer.send_and_wait(topic, value, key=key.encode())


class ResultsDispatcher:
    """Routes each wallet result to the feature that owns its transaction_type; ignores the rest
    (other services' results share the topic)."""

    def __init__(self) -> None:
        self._handlers: dict[str, ResultHandler] = {}

    def register(self, handlers: Mapping[str, ResultHandler], owner: str) -> None:
        for transaction_type, handler in handlers.items():
            if transaction_type in self._handlers:
                raise ValueError(
                    f"{owner}: transaction_type {transaction_type!r} already has a handler"
                )
            self._handlers[transaction_type] = handler

    def handles(self, result: CommandResult) -> bool:
        return result.transaction_type in self._handlers

    async def dispatch(self, result: CommandResult) -> None:
        handler = self._handlers.get(result.transaction_type)
        if handler is not None:
            await handler(result)


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.joined.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Joined even with no partition: with more instances than partitions some get none.
        self.joined.set()


class ResultsConsumer:
    """Consumer group on wallet.results: offsets are committed only after a batch is applied, so
    a crash replays results; applying one is a conditional update, so a replay changes nothing."""

    def __init__(
        self,
        bootstrap_servers: str,
        dispatcher: ResultsDispatcher,
        *,
        topic: str,
        group_id: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self._dispatcher = dispatcher
        self._topic = topic
        self._assignment = _Assignment()
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            # A new group starts at the beginning: results published while the service was down
            # still move their swaps and orders.
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def assigned(self) -> bool:
        """Joined the group and still consuming (a dead loop must fail the health check)."""
        running = self._task is not None and not self._task.done()
        return running and self._assignment.joined.is_set()

    async def start(self) -> None:
        # Made here, not in __init__: aiokafka binds to the running event loop.
        self._consumer = AIOKafkaConsumer(**self._options)
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self._assignment)
        self._task = asyncio.create_task(self._run(), name="trading-results-consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=200)
            for records in batches.values():
                for record in records:
                    result = self._read(record.value)
                    if result is not None:
                        await self._apply(result)
            if batches:
                try:
                    await self._consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their next owner re-reads them.
                    log.warning("results.commit_failed_after_rebalance")

    def _read(self, value: bytes | None) -> CommandResult | None:
        if value is None:
            return None
        try:
            result = CommandResult.model_validate_json(value)
        except ValidationError:
            log.warning("results.unreadable", value=value[:200])
            return None
        return result if self._dispatcher.handles(result) else None

    async def _apply(self, result: CommandResult) -> None:
        # A failure here is the database being away: retry rather than skip a result (the swap
        # would stay pending forever) or crash the consumer.
        while True:
            try:
                await self._dispatcher.dispatch(result)
                return
            except Exception:
                log.exception("results.apply_failed", reference=result.reference_id)
                await asyncio.sleep(RETRY_DELAY_SECONDS)


class RecentMessagesReader:
    """Reads every partition of a topic without a consumer group, starting `lookback` messages
    before the end of each, and hands each message to `handle`.

    For topics whose latest message per key is what counts (market.prices): every process sees
    every message, and startup costs neither a group join nor a replay of the whole history.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        handle: Callable[[bytes, bytes | None], Awaitable[None]],
        *,
        lookback: int = 500,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._handle = handle
        self._lookback = lookback
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers, enable_auto_commit=False
        )
        await self._consumer.start()
        await self._consumer.topics()  # fetches the cluster's metadata, partitions included
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        if assigned:
            ends = await self._consumer.end_offsets(assigned)
            starts = await self._consumer.beginning_offsets(assigned)
            for tp in assigned:
                self._consumer.seek(tp, max(starts[tp], ends[tp] - self._lookback))
        self._task = asyncio.create_task(self._run(), name=f"reader-{self._topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def _run(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            if record.value is None:
                continue
            try:
                await self._handle(record.value, record.key)
            except Exception:
                log.exception("reader.handle_failed", topic=self._topic)
