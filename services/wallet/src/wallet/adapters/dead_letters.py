"""Reading `wallet.commands.dlq` back for ops: the last dead letters of every partition.

A consumer of no group (nothing committed, nothing moved for anyone else) reads each partition's
last `last` records, from where they start up to the end offset it found on arrival.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared.messaging import DeadLetter

_NEVER: Final = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One record of the dead-letter topic: the letter, or the record's text when it is not one
    (written by something else): shown as it is rather than skipped."""

    partition: int
    offset: int
    letter: DeadLetter | None
    text: str


@dataclass(frozen=True, slots=True)
class DeadLetters:
    topic: str
    total: int  # records on the topic now (what retention kept)
    last: list[StoredDeadLetter]  # the newest, oldest first


async def read_dead_letters(bootstrap_servers: str, topic: str, last: int) -> DeadLetters:
    """The `last` newest records of `topic` (by the time they were dead-lettered), and how many it
    holds. Reads each partition's last `last` records: the newest `last` are among them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise LookupError(f"no topic {topic} on {bootstrap_servers}")
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        starts = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            consumer.seek(tp, max(starts[tp], ends[tp] - last))
        found: list[StoredDeadLetter] = []
        while any([await consumer.position(tp) < ends[tp] for tp in assigned]):
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                found += [
                    _stored(r.partition, r.offset, r.value) for r in records if r.offset < ends[tp]
                ]
        total = sum(ends[tp] - starts[tp] for tp in assigned)
    finally:
        await consumer.stop()
    found.sort(key=_newness)
    return DeadLetters(topic, total, found[-last:] if last else [])


def _stored(partition: int, offset: int, value: bytes | None) -> StoredDeadLetter:
    text = (value or b"").decode("utf-8", errors="backslashreplace")
    try:
        letter = DeadLetter.model_validate_json(value or b"")
    except ValidationError:
        letter = None
    return StoredDeadLetter(partition, offset, letter, text)


def _newness(stored: StoredDeadLetter) -> tuple[datetime, int, int]:
    # When it was dead-lettered; a record that is no letter sorts first, by where it is.
    at = stored.letter.failed_at if stored.letter else _NEVER
    return (at, stored.partition, stored.offset)
