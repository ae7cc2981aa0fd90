"""The FastStream subscriber on `wallet.commands`: batches in, offsets committed after the work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage

from shared.logging import get_logger
from shared.messaging.topics import PRODUCER_HEADER, Topics
from wallet.application.command_intake import CommandIntake, IncomingRecord
from wallet.entrypoints.metrics import WalletMetrics

log = get_logger(__name__)

CONSUMER_GROUP = "wallet"


class AssignmentTracker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Knows the partitions the consumer holds: readiness needs at least one."""

    def __init__(self) -> None:
        self.joined = False
        self.partitions: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.partitions -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.partitions |= set(assigned)
        self.joined = True


async def _leave_undecoded(message: StreamMessage[Any]) -> None:
    """The intake decodes each record itself (and dead-letters what is not a command): FastStream's
    own JSON decoding of the batch would be work done twice on the hot path."""


def _producer(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == PRODUCER_HEADER:
            return value
    return None


def register_command_consumer(
    broker: KafkaBroker,
    intake: CommandIntake,
    metrics: WalletMetrics,
    topics: Topics,
    *,
    max_records: int = 500,
    batch_timeout_ms: int = 50,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
) -> AssignmentTracker:
    """Subscribe the intake to `wallet.commands` in group `wallet`.

    NACK_ON_ERROR: a batch that fails (the store stayed unavailable through the retries) is not
    committed; the consumer seeks back and the same records come again.
    """
    tracker = AssignmentTracker()

    @broker.subscriber(
        topics.commands,
        group_id=topics.prefix + CONSUMER_GROUP,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=batch_timeout_ms,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        listener=tracker,
        decoder=_leave_undecoded,
        title="wallet-commands",
        description="Wallet commands, applied idempotently by (type, transaction_type, reference_id).",
    )
    async def consume_wallet_commands(body: Any, message: KafkaMessage) -> None:
        raw = message.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)
        incoming = [
            IncomingRecord(r.value, r.key, r.topic, r.partition, r.offset, _producer(r.headers))
            for r in records
        ]
        try:
            report = await intake.process(incoming)
        except Exception:
            metrics.batch_failures.inc()
            log.exception("command_batch_failed", size=len(incoming))
            raise
        metrics.observe(report)

    return tracker
