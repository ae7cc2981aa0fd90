"""Kafka plumbing shared by the trading features: one producer, the wallet.results consumer and
its dispatcher (consumer groups are shared.results_consumer's), and a group-less reader of a
topic's recent messages (market.prices)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.messaging import CommandResult
from shared.results_consumer import WalletResultsConsumer

log = structlog.get_logger(__name__)

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


class ResultsConsumer(WalletResultsConsumer):
    """Consumer group on wallet.results: each result goes to the feature that handles its
    transaction_type; results no feature handles are skipped."""

    def __init__(
        self, bootstrap_servers: str, dispatcher: ResultsDispatcher, **options: Any
    ) -> None:
        super().__init__(bootstrap_servers, dispatcher.dispatch, dispatcher.handles, **options)


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
