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
from wallet.domain.registry import describe
from wallet.entrypoints.metrics import WalletMetrics

log = get_logger(__name__)

CONSUMER_GROUP = "wallet"

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
        description=COMMANDS_DESCRIPTION,
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
