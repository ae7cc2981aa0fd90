"""Kafka plumbing shared by the trading features: one producer, consumer groups (the
wallet.results consumer and its dispatcher; wallet.events readers), and a group-less reader of a
topic's recent messages (market.prices)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
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


class GroupConsumer[M](abc.ABC):
    """A consumer group on one topic: each message read (`_read`) and handled (`_handle`) in
    order per partition; offsets committed only after a batch is handled, so a crash replays it
    and handlers must be idempotent. A handler that fails is retried, never skipped."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str,
        group_id: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self._topic = topic
        self._group_id = group_id
        self._assignment = _Assignment()
        self._options = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            # A new group starts at the beginning: what was published while the service was
            # down (or before the group existed) is still handled.
            "auto_offset_reset": "earliest",
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    def _read(self, value: bytes | None) -> M | None:
        """The message to handle, or None to skip it (unreadable, or not ours)."""

    @abc.abstractmethod
    async def _handle(self, message: M) -> None: ...

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
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._group_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def caught_up(self, within: float) -> bool:
        """True once the group has handled (committed) every message published before this
        call, on every partition, whichever member owns it; False if not within `within` s."""
        consumer = self._consumer
        if consumer is None:
            return False
        await consumer.topics()  # refreshes the cluster's metadata
        partitions = [
            TopicPartition(self._topic, p)
            for p in sorted(consumer.partitions_for_topic(self._topic) or ())
        ]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        deadline = time.monotonic() + within
        while True:
            behind = []
            for tp in partitions:
                committed = await consumer.committed(tp) if ends[tp] else None
                if ends[tp] and (committed is None or committed < ends[tp]):
                    behind.append(tp.partition)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning("consumer.behind", group=self._group_id, partitions=behind)
                return False
            await asyncio.sleep(0.2)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=200)
            for records in batches.values():
                for record in records:
                    message = self._read(record.value)
                    if message is not None:
                        await self._apply(message)
            if batches:
                try:
                    await self._consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their next owner re-reads them.
                    log.warning("consumer.commit_failed_after_rebalance", group=self._group_id)

    async def _apply(self, message: M) -> None:
        # A failure here is the database or the broker being away: retry rather than skip a
        # message (a swap would stay pending, a commission would be lost) or crash the consumer.
        while True:
            try:
                await self._handle(message)
                return
            except Exception:
                log.exception("consumer.apply_failed", group=self._group_id)
                await asyncio.sleep(RETRY_DELAY_SECONDS)


class ResultsConsumer(GroupConsumer[CommandResult]):
    """Consumer group on wallet.results: applying a result is a conditional update, so a replay
    changes nothing; results no feature handles are skipped."""

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
        super().__init__(
            bootstrap_servers,
            topic=topic,
            group_id=group_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
        self._dispatcher = dispatcher

    def _read(self, value: bytes | None) -> CommandResult | None:
        if value is None:
            return None
        try:
            result = CommandResult.model_validate_json(value)
        except ValidationError:
            log.warning("results.unreadable", value=value[:200])
            return None
        return result if self._dispatcher.handles(result) else None

    async def _handle(self, message: CommandResult) -> None:
        await self._dispatcher.dispatch(message)


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
