"""From Kafka records to outcomes: decode, apply the batch, publish; the caller then commits offsets.

The order is what makes the effect exactly-once: the database commit comes first, publishing
second, the offset commit last. A crash anywhere before the offset commit redelivers the batch;
the ledger answers the redelivered commands as duplicates and everything is published again, so
results and events are at-least-once and the ledger itself exactly-once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from shared.messaging import (
    CommandResult,
    DeadLetter,
    InvalidCommand,
    LedgerTransaction,
    WalletCommand,
    parse_command,
)
from shared.messaging.outcomes import UNRECORDED_REFUSAL
from shared.messaging.topics import usable_producer
from wallet.application.ledger_service import BatchReport, LedgerService
from wallet.application.ports import ConcurrencyConflict, TransientStoreError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IncomingRecord:
    """One consumed Kafka record, as the intake needs it."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    producer: bytes | None = None  # the record's `producer` header: who sent the command


class IntakePublisher(Protocol):
    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
        producers: Mapping[str, bytes],
    ) -> None:
        """Publish everything and return once the broker acknowledged all of it.

        `producers` maps a command_id to the `producer` header its command came with: its result
        carries the same header, so that producer's client finds it without decoding the rest.
        """
        ...


@dataclass(slots=True)
class IntakeReport:
    batch: BatchReport = field(default_factory=BatchReport)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    received: int = 0
    seconds: float = 0.0


def _as_text(value: bytes | None) -> str:
    # Undecodable bytes are escaped rather than dropped: ops must see exactly what arrived.
    return "" if value is None else value.decode("utf-8", errors="backslashreplace")


# What a dead letter keeps of the record (more is cut): escaped as JSON, a control character takes
# six bytes, so a letter must stay well under the broker's message limit (1 MB by default) or
# publishing it fails for good and holds the partition's batch back.
DEAD_LETTER_VALUE_CHARS: Final = 65_536
DEAD_LETTER_KEY_BYTES: Final = 1_024


def dead_letter_for(record: IncomingRecord, error: InvalidCommand) -> DeadLetter:
    return DeadLetter(
        reason=error.reason,
        detail=error.detail,
        raw_value=_as_text(record.value)[:DEAD_LETTER_VALUE_CHARS],
        key=None if record.key is None else _as_text(record.key[:DEAD_LETTER_KEY_BYTES]),
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
    )


def rejection_for_invalid(error: InvalidCommand) -> tuple[str, CommandResult] | None:
    """A sender that can be identified is told its command was refused, not left waiting."""
    envelope = error.envelope
    if "command_id" not in envelope or "user_id" not in envelope:
        return None
    result = CommandResult(
        command_id=envelope["command_id"],
        type=envelope.get("type", "unknown"),
        transaction_type=envelope.get("transaction_type", ""),
        reference_id=envelope.get("reference_id", ""),
        user_id=envelope["user_id"],
        status="rejected",
        reason=error.reason,
        detail=error.detail,
    )
    return envelope["user_id"], result


@dataclass(slots=True)
class DecidedBatch:
    """A batch the store has committed, with what is still to be published."""

    report: IntakeReport
    refusals: list[tuple[str, CommandResult]]  # results for invalid commands of known senders
    producers: dict[str, bytes]  # command_id → its `producer` header


class CommandIntake:
    """Turns a batch of consumed records into committed outcomes and published messages."""

    def __init__(self, ledger: LedgerService, publisher: IntakePublisher) -> None:
        self._ledger = ledger
        self._publisher = publisher

    @property
    def records_per_commit(self) -> int | None:
        """The most commands one store commit carries now (None: no limit): a database that ran
        out of time made the ledger split its batches, and they grow back while commits succeed."""
        return self._ledger.commit_limit

    async def process(self, records: Sequence[IncomingRecord]) -> IntakeReport:
        """Decide the batch (the store commits it), then publish its outcomes."""
        decided = await self.decide(records)
        await self.publish(decided)
        return decided.report

    async def decide(self, records: Sequence[IncomingRecord]) -> DecidedBatch:
        """Decode the records and apply the batch: when this returns, the store has committed it.

        Nothing is published yet: a consumer may decide the next batch while this one's
        messages are on their way, as long as it publishes batches in order and commits a
        batch's offsets only after its `publish` returned.
        """
        started = time.perf_counter()
        report = IntakeReport(received=len(records))
        commands: list[tuple[IncomingRecord, WalletCommand]] = []
        refusals: list[tuple[str, CommandResult]] = []
        # command_id → the `producer` header of the record its result answers: the first valid
        # record with that id (a later one is its duplicate), else the first refused one, so that
        # a record reusing another's id does not send that command's result elsewhere.
        producers: dict[str, bytes] = {}
        refused_producers: dict[str, bytes] = {}
        for record in records:
            producer = usable_producer(record.producer)
            try:
                command = parse_command(record.value or b"")
            except InvalidCommand as error:
                self._dead_letter(report, refusals, record, error)
                if producer is not None and "command_id" in error.envelope:
                    refused_producers.setdefault(error.envelope["command_id"], producer)
                continue
            except Exception as error:
                # A message the decoder itself fails on (a bug): dead-lettered like poison, so
                # that it cannot fail its batch on every delivery and stop the partition.
                log.exception("command_decoding_failed", partition=record.partition)
                failure = InvalidCommand(
                    UNRECORDED_REFUSAL, f"{type(error).__name__}: {str(error)[:300]}", {}
                )
                self._dead_letter(report, refusals, record, failure)
                continue
            commands.append((record, command))
            if producer is not None:
                producers.setdefault(command.command_id, producer)
        for command_id, producer in refused_producers.items():
            producers.setdefault(command_id, producer)
        try:
            report.batch = await self._ledger.handle_batch([c for _, c in commands])
        except (ConcurrencyConflict, TransientStoreError):
            raise  # the store: the whole batch comes again, nothing is lost or skipped
        except Exception:
            # A command the ledger cannot process (a bug, a document the store refuses) would
            # otherwise fail its batch on every redelivery and stop the partition.
            log.exception("command_batch_failed_isolating", size=len(commands))
            report.batch = await self._isolate_failures(commands, report, refusals)
        report.seconds = time.perf_counter() - started
        return DecidedBatch(report, refusals, producers)

    async def publish(self, decided: DecidedBatch) -> None:
        """Publish a decided batch; returns once the broker acknowledged all of it."""
        started = time.perf_counter()
        report = decided.report
        await self._publisher.publish(
            [*report.batch.results, *decided.refusals],
            report.batch.events,
            report.dead_letters,
            decided.producers,
        )
        report.batch.results.extend(decided.refusals)
        decided.refusals = []
        report.seconds += time.perf_counter() - started

    async def _isolate_failures(
        self,
        commands: Sequence[tuple[IncomingRecord, WalletCommand]],
        report: IntakeReport,
        refusals: list[tuple[str, CommandResult]],
    ) -> BatchReport:
        """Apply the commands one at a time; dead-letter each one that fails on its own.

        Slow (a round trip or three per command), but only taken after a batch failed for a
        reason that is not the store's: each command is still applied at most once, by key.
        """
        combined = BatchReport()
        for record, command in commands:
            try:
                single = await self._ledger.handle_batch([command])
            except (ConcurrencyConflict, TransientStoreError):
                raise
            except Exception as error:
                log.exception("command_dead_lettered", reason=UNRECORDED_REFUSAL)
                failure = InvalidCommand(
                    UNRECORDED_REFUSAL,
                    f"{type(error).__name__}: {str(error)[:300]}",
                    {
                        "command_id": command.command_id,
                        "type": command.type,
                        "transaction_type": command.transaction_type,
                        "reference_id": command.reference_id,
                        "user_id": command.user_id,
                    },
                )
                self._dead_letter(report, refusals, record, failure)
                continue
            combined.results.extend(single.results)
            combined.events.extend(single.events)
            combined.attempts = max(combined.attempts, single.attempts)
        return combined

    @staticmethod
    def _dead_letter(
        report: IntakeReport,
        refusals: list[tuple[str, CommandResult]],
        record: IncomingRecord,
        error: InvalidCommand,
    ) -> None:
        log.warning(
            "command_dead_lettered",
            reason=error.reason,
            detail=error.detail,
            partition=record.partition,
            offset=record.offset,
            **error.envelope,
        )
        # Its Kafka key only spreads the letters over the partitions: cut like the letter's.
        key = None if record.key is None else record.key[:DEAD_LETTER_KEY_BYTES]
        report.dead_letters.append((key, dead_letter_for(record, error)))
        refusal = rejection_for_invalid(error)
        if refusal is not None:
            refusals.append(refusal)
