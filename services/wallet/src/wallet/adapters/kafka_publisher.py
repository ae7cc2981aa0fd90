"""Publishes a batch's outcomes: one Kafka record batch per partition, all in flight at once.

The FastStream publishers are declared with their message schemas, so the AsyncAPI document of the
wallet describes what it sends on each topic. The records themselves go out through an aiokafka
producer of the publisher's own, a whole record batch per partition (`send_batch`): publishing
one message at a time through FastStream and aiokafka's `send` cost about a third of the wallet's
time per command (a future, a publish command object and a pure-Python murmur2 hash per message).
What is on the wire is unchanged: the same values, keys, partitions (the Java client's murmur2
partitioner, as aiokafka's default), and headers (`content-type` empty for raw bytes and
`correlation_id`, as FastStream sets them; `producer` on a result whose command carried one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from faststream.kafka import KafkaBroker

from shared.messaging import CommandResult, DeadLetter, LedgerTransaction, encode
from shared.messaging.topics import PRODUCER_HEADER, Topics

Headers = list[tuple[str, bytes]]
# Under the broker's default largest message (1 MB): a record batch is one message to the broker.
MAX_BATCH_BYTES = 512 * 1024
_PARTITION_CACHE_LIMIT = 100_000


def _headers(correlation_id: str, producer: bytes | None = None) -> Headers:
    headers = [("content-type", b""), ("correlation_id", correlation_id.encode())]
    if producer is not None:
        headers.append((PRODUCER_HEADER, producer))
    return headers


class PartitionBatches:
    """Record batches being filled, by (topic, partition); a full one is sent and a new one begun."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], Any] = {}
        self.sent: list[asyncio.Future[Any]] = []

    async def add(
        self, topic: str, partition: int, key: bytes | None, value: bytes, h: Headers
    ) -> None:
        where = (topic, partition)
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=h) is None:
            await self._send(where, batch)
            batch = self._open[where] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=h) is None:
                raise ValueError(f"a message of {len(value)} bytes does not fit a record batch")

    async def _send(self, where: tuple[str, int], batch: Any) -> None:
        self.sent.append(await self._producer.send_batch(batch, where[0], partition=where[1]))

    async def flush(self) -> None:
        for where, batch in self._open.items():
            await self._send(where, batch)
        self._open.clear()
        await asyncio.gather(*self.sent)


class KeyPartitioner:
    """The Java client's default partitioner (aiokafka's too): murmur2 of the key, modulo the
    partition count. Keys repeat (they are users), so the hash of each is kept."""

    def __init__(self, limit: int = _PARTITION_CACHE_LIMIT) -> None:
        self._limit = limit
        self._known: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes, partitions: Sequence[int]) -> int:
        count = len(partitions)
        found = self._known.get((key, count))
        if found is None:
            if len(self._known) >= self._limit:
                self._known.clear()
            found = self._known[(key, count)] = (murmur2(key) & 0x7FFFFFFF) % count
        return partitions[found]


class KafkaOutcomePublisher:
    def __init__(self, broker: KafkaBroker, topics: Topics, bootstrap_servers: str) -> None:
        self._topics = topics
        broker.publisher(
            topics.results,
            schema=CommandResult,
            title="wallet-results",
            description=(
                "The outcome of every command delivery: applied, duplicate or rejected. Carries "
                "the `producer` header of its command, when the command had one."
            ),
        )
        broker.publisher(
            topics.events,
            schema=LedgerTransaction,
            title="wallet-events",
            description="Applied ledger transactions (at-least-once; dedupe by transaction_id).",
        )
        broker.publisher(
            topics.dead_letters,
            schema=DeadLetter,
            title="wallet-commands-dlq",
            description="Messages that are not valid commands, with the reason and source offset.",
        )
        self._bootstrap_servers = bootstrap_servers
        self._producer: AIOKafkaProducer | None = None
        self._partition = KeyPartitioner()

    async def start(self) -> None:
        # acks="all": offsets are committed only after every outcome is on the broker for good.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            acks="all",
            client_id="wallet",
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=4 * MAX_BATCH_BYTES,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the outcome publisher is not started")
        return self._producer

    async def _partitions(self, topic: str) -> list[int]:
        return sorted(await self.producer.partitions_for(topic))

    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
        producers: Mapping[str, bytes],
    ) -> None:
        # Everything is enqueued without waiting, then every acknowledgement is awaited: offsets
        # are committed only after all of it is on the broker. Results and events carry their
        # command's id as correlation id: it traces a command end to end.
        batches = PartitionBatches(self.producer)
        await self._add(
            batches,
            self._topics.dead_letters,
            ((key, encode(letter), _headers(uuid.uuid4().hex)) for key, letter in dead_letters),
        )
        await self._add(
            batches,
            self._topics.results,
            (
                (
                    user_id.encode(),
                    encode(result),
                    _headers(result.command_id, producers.get(result.command_id)),
                )
                for user_id, result in results
            ),
        )
        await self._add(
            batches,
            self._topics.events,
            (
                (event.user_id.encode(), encode(event), _headers(event.command_id))
                for event in events
            ),
        )
        await batches.flush()

    async def _add(
        self,
        batches: PartitionBatches,
        topic: str,
        messages: Iterable[tuple[bytes | None, bytes, Headers]],
    ) -> None:
        partitions: list[int] | None = None
        for key, value, headers in messages:
            if partitions is None:
                partitions = await self._partitions(topic)
            # Only a dead letter can lack a key: any partition will do for it.
            partition = partitions[0] if key is None else self._partition(key, partitions)
            await batches.add(topic, partition, key, value, headers)
