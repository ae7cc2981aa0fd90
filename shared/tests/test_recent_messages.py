"""The group-less reader of market.prices on the embedded broker: it starts `lookback` messages
before the end of each partition, finds a topic created after it started (the wallet may start
before the trading service's feed), skips tombstones and goes on after a failing handler."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from shared.infra.kafka import ensure_topics
from shared.recent_messages import RecentMessagesReader


class Seen:
    def __init__(self, failing: bytes = b"") -> None:
        self.values: list[bytes] = []
        self._failing = failing

    async def __call__(self, value: bytes, key: bytes | None) -> None:
        if value == self._failing:
            raise RuntimeError("this one cannot be handled")
        self.values.append(value)

    async def until(self, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.values) < count:
                await asyncio.sleep(0.05)


async def send(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"one-key")
    finally:
        await producer.stop()


async def test_a_reader_starts_lookback_messages_before_the_end(
    kafka_bootstrap_servers: str,
) -> None:
    topic = f"recent.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap_servers, [topic], partitions=1)
    await send(kafka_bootstrap_servers, topic, [b"%d" % n for n in range(10)])
    seen = Seen()
    reader = RecentMessagesReader(kafka_bootstrap_servers, topic, seen, lookback=3)
    await reader.start()
    try:
        await seen.until(3)
        await send(kafka_bootstrap_servers, topic, [b"10"])
        await seen.until(4)
        assert seen.values == [b"7", b"8", b"9", b"10"]
    finally:
        await reader.stop()


async def test_a_reader_finds_a_topic_created_after_it_started(
    kafka_bootstrap_servers: str,
) -> None:
    topic = f"recent.{uuid.uuid4().hex[:8]}"
    seen = Seen(failing=b"poison")
    reader = RecentMessagesReader(kafka_bootstrap_servers, topic, seen, lookback=100)
    await reader.start()
    try:
        assert reader.running
        await ensure_topics(kafka_bootstrap_servers, [topic], partitions=2)
        await send(kafka_bootstrap_servers, topic, [b"first", None, b"poison", b"second"])
        await seen.until(2)
        assert seen.values == [b"first", b"second"]
    finally:
        await reader.stop()
