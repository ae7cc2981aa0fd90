"""A group-less reader of a topic's recent messages (market.prices), shared by every service that
keeps the latest message per key: the trading service's price book and the wallet's.

Every process sees every message, and startup costs neither a group join nor a replay of the
whole history: each partition is read from `lookback` messages before its end as found at
start. The topic keeps days of history (Kafka's default retention), and a reader that started at
the earliest offset served days-old values until it had caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

log = structlog.get_logger(__name__)

MessageHandler = Callable[[bytes, bytes | None], Awaitable[None]]

# While the topic does not exist yet (its producer has not started), how often to look again.
TOPIC_POLL_SECONDS: Final = 1.0


class RecentMessagesReader:
    """Reads every partition of a topic without a consumer group, starting `lookback` messages
    before the end of each, and hands each message's value and key to `handle`. A tombstone (no
    value) is skipped; a failing `handle` is logged and the reader goes on (the latest message per
    key is what counts, and the next one replaces it).

    The partitions are those the topic has when the reader first finds it; partitions added to the
    topic later are not read until the process restarts.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        handle: MessageHandler,
        *,
        lookback: int = 500,
    ) -> None:
        if lookback < 1:
            raise ValueError("lookback is at least one message")
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
        await self._start_consumer()
        # Assigned here when the topic exists, so that what start() returns to reads at once.
        assigned = await self._assign()
        self._task = asyncio.create_task(self._run(assigned), name=f"reader-{self._topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self._task = self._consumer = None

    async def _start_consumer(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers, enable_auto_commit=False
        )
        # Starting fetches the cluster's metadata, every topic's partitions included.
        await self._consumer.start()

    async def _assign(self) -> bool:
        assert self._consumer is not None
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        if not partitions:
            return False
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        ends = await self._consumer.end_offsets(assigned)
        starts = await self._consumer.beginning_offsets(assigned)
        for tp in assigned:
            self._consumer.seek(tp, max(starts[tp], ends[tp] - self._lookback))
        return True

    async def _run(self, assigned: bool) -> None:
        assert self._consumer is not None
        while not assigned:
            await asyncio.sleep(TOPIC_POLL_SECONDS)
            # A consumer keeps the metadata it started with: a new one sees a topic created since.
            try:
                await self._consumer.stop()
                await self._start_consumer()
                assigned = await self._assign()
            except Exception:
                log.exception("reader.metadata_failed", topic=self._topic)
        async for record in self._consumer:
            if record.value is None:
                continue
            try:
                await self._handle(record.value, record.key)
            except Exception:
                log.exception("reader.handle_failed", topic=self._topic)
