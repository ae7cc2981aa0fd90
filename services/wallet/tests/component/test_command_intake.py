"""The intake: records in, outcomes out; poison never stops the partition, the store's errors do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from shared.messaging import (
    CommandResult,
    CreditCommand,
    DeadLetter,
    LedgerTransaction,
    WalletCommand,
    encode,
)
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application import command_intake
from wallet.application.command_intake import CommandIntake, IncomingRecord
from wallet.application.ledger_service import LedgerService
from wallet.application.ports import TransientStoreError
from wallet.domain.records import LedgerBatch


class RecordingPublisher:
    def __init__(self) -> None:
        self.results: list[CommandResult] = []
        self.events: list[LedgerTransaction] = []
        self.dead_letters: list[DeadLetter] = []
        self.wire: list[tuple[bytes | None, bytes]] = []
        self.producers: dict[str, bytes] = {}

    async def publish(
        self,
        results: Sequence[tuple[str, CommandResult]],
        events: Sequence[LedgerTransaction],
        dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
        producers: Mapping[str, bytes],
    ) -> None:
        # Keys and values written as the Kafka publisher writes them: what it could not write
        # fails here too.
        self.wire.extend((user_id.encode(), encode(result)) for user_id, result in results)
        self.wire.extend((event.user_id.encode(), encode(event)) for event in events)
        self.wire.extend((key, encode(letter)) for key, letter in dead_letters)
        self.results.extend(r for _, r in results)
        self.events.extend(events)
        self.dead_letters.extend(d for _, d in dead_letters)
        self.producers.update(producers)


class StoreRefusingOneCommand(InMemoryLedgerStore):
    """Refuses any batch that holds reference `poison`, as MongoDB refuses a document it cannot
    store: not a conflict, not transient, the same every time."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def commit(self, batch: LedgerBatch) -> None:
        if any(o.command.reference_id == "poison" for o in batch.outcomes):
            raise self.error
        await super().commit(batch)


def record(reference: str, offset: int) -> IncomingRecord:
    command = CreditCommand(
        command_id=f"c-{reference}",
        user_id="alice",
        currency="BTC",
        amount="0.1",
        transaction_type="deposit_nowpayments",
        reference_id=reference,
    )
    return IncomingRecord(encode(command), b"alice", "wallet.commands", 2, offset)


async def test_a_command_the_store_refuses_is_dead_lettered_and_the_rest_applied() -> None:
    store = StoreRefusingOneCommand(ValueError("BSON document too large"))
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(store, backoff_seconds=0), publisher)
    records = [record("p1", 10), record("poison", 11), record("p2", 12)]
    report = await intake.process(records)

    assert [(r.reference_id, r.status, r.reason) for r in publisher.results] == [
        ("p1", "applied", None),
        ("p2", "applied", None),
        ("poison", "rejected", "processing_failed"),
    ]
    (letter,) = publisher.dead_letters
    assert (letter.reason, letter.source_partition, letter.source_offset) == (
        "processing_failed",
        2,
        11,
    )
    assert letter.detail == "ValueError: BSON document too large"
    assert letter.raw_value == (records[1].value or b"").decode()
    assert len(publisher.events) == 2
    assert str(store.wallets[("alice", "BTC")].balances.available.normalize()) == "0.2"
    assert report.received == 3


async def test_store_outages_fail_the_batch_so_that_it_comes_again() -> None:
    store = StoreRefusingOneCommand(TransientStoreError("primary stepped down"))
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(store, backoff_seconds=0, max_attempts=2), publisher)
    with pytest.raises(TransientStoreError):
        await intake.process([record("p1", 10), record("poison", 11)])
    # Nothing was published: the offsets stay where they were and the batch comes again. The store
    # kept failing, so the batch was split: the half it could commit is committed (and answers
    # "duplicate" when it comes again); the half it could not is not.
    assert (publisher.results, publisher.dead_letters) == ([], [])
    assert [key[2] for key in store.outcomes] == ["p1"]


async def test_a_message_the_decoder_fails_on_is_dead_lettered_and_the_rest_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a refusal (InvalidCommand) but a decoder bug: the message must not fail its batch."""
    real_parse = command_intake.parse_command

    def parse_failing_on_poison(raw: bytes) -> WalletCommand:
        if b'"poison"' in raw:
            raise ArithmeticError("a bug in decoding")
        return real_parse(raw)

    monkeypatch.setattr(command_intake, "parse_command", parse_failing_on_poison)
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(InMemoryLedgerStore()), publisher)
    report = await intake.process([record("p1", 10), record("poison", 11), record("p2", 12)])
    assert [r.reference_id for r in publisher.results] == ["p1", "p2"]
    (letter,) = publisher.dead_letters
    assert (letter.reason, letter.source_offset) == ("processing_failed", 11)
    assert "ArithmeticError: a bug in decoding" in letter.detail
    assert report.batch.count("applied") == 2


async def test_a_dead_letter_stays_far_below_the_brokers_message_limit() -> None:
    """A 200 KB key of control characters made a 1.4 MB letter (each escaped in six bytes) on a
    key of 200 KB: over real Kafka's 1 MB default, its publish failed on every try and held the
    partition's batch back for good. What it keeps of key and value is cut."""
    garbage = IncomingRecord(b"\x01" * 900_000, b"\x01" * 200_000, "wallet.commands", 2, 11)
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(InMemoryLedgerStore()), publisher)
    await intake.process([record("p1", 10), garbage, record("p2", 12)])
    assert [r.reference_id for r in publisher.results] == ["p1", "p2"]
    [(key, letter)] = [(k, v) for k, v in publisher.wire if b'"source_offset":11' in v]
    assert key == b"\x01" * 1_024
    assert len(key) + len(letter) < 512 * 1024
    [dead] = publisher.dead_letters
    assert (dead.key, len(dead.raw_value)) == ("\x01" * 1_024, 65_536)


async def test_a_lone_surrogate_is_refused_at_intake_and_the_rest_applied() -> None:
    """Text no UTF-8 can hold (here escaped, "\\ud800") is refused as the command arrives: it
    moves nothing, and what is published back echoes only what can be written."""
    good = record("p1", 10)
    surrogate = b"\\ud800"
    in_metadata = record("p2", 11).value or b""
    in_metadata = in_metadata.replace(b'"metadata":{}', b'"metadata":{"note":"' + surrogate + b'"}')
    in_reference = (record("p3", 12).value or b"").replace(b'"p3"', b'"p3' + surrogate + b'"')
    in_user = (record("p4", 13).value or b"").replace(b'"alice"', b'"al' + surrogate + b'ice"')
    assert in_metadata.count(surrogate) == in_reference.count(surrogate) == 1
    assert in_user.count(surrogate) == 1
    records = [
        good,
        IncomingRecord(in_metadata, b"alice", "wallet.commands", 2, 11),
        IncomingRecord(in_reference, b"alice", "wallet.commands", 2, 12),
        IncomingRecord(in_user, b"alice", "wallet.commands", 2, 13),
        record("p5", 14),
    ]
    publisher = RecordingPublisher()
    store = InMemoryLedgerStore()
    report = await CommandIntake(LedgerService(store), publisher).process(records)

    # The senders that can be told are: rejected invalid_field, the unwritable reference left out.
    # A user id that cannot be written cannot key a result: that one is dead-lettered only.
    assert [(r.command_id, r.reference_id, r.status, r.reason) for r in publisher.results] == [
        ("c-p1", "p1", "applied", None),
        ("c-p5", "p5", "applied", None),
        ("c-p2", "p2", "rejected", "invalid_field"),
        ("c-p3", "", "rejected", "invalid_field"),
    ]
    assert [
        (d.reason, d.source_offset, d.detail.split(":")[0]) for d in publisher.dead_letters
    ] == [
        ("invalid_field", 11, "metadata.note"),
        ("invalid_field", 12, "reference_id"),
        ("invalid_field", 13, "user_id"),
    ]
    assert publisher.dead_letters[0].raw_value == in_metadata.decode()
    assert len(publisher.events) == 2
    assert str(store.wallets[("alice", "BTC")].balances.available.normalize()) == "0.2"
    assert report.batch.count("applied") == 2


def from_producer(
    reference: str, offset: int, producer: bytes, command_id: str = ""
) -> IncomingRecord:
    sent = record(reference, offset)
    value = sent.value or b""
    if command_id:
        value = value.replace(f'"c-{reference}"'.encode(), f'"{command_id}"'.encode())
    return IncomingRecord(value, sent.key, sent.topic, sent.partition, offset, producer)


async def test_a_producer_header_the_result_may_not_carry_back_is_dropped() -> None:
    """A compressed command can carry megabytes of header, and a result the broker refuses as too
    large would fail its batch on every delivery: only a short printable name is copied back."""
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(InMemoryLedgerStore(), backoff_seconds=0), publisher)
    await intake.process(
        [
            from_producer("longest", 1, b"p" * 128),
            from_producer("too-long", 2, b"p" * 129),
            from_producer("huge", 3, b"x" * 5_000_000),
            from_producer("spaced", 4, b"p2p service"),
            from_producer("control", 5, b"p2p\x1b"),
            from_producer("non-ascii", 6, "p2p-é".encode()),
            from_producer("empty", 7, b""),
            from_producer("named", 8, b"wallet-client-0123abcd"),
        ]
    )
    assert [r.status for r in publisher.results] == ["applied"] * 8  # the money moves all the same
    assert publisher.producers == {"c-longest": b"p" * 128, "c-named": b"wallet-client-0123abcd"}


async def test_a_record_reusing_a_command_id_does_not_take_that_commands_result() -> None:
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(InMemoryLedgerStore(), backoff_seconds=0), publisher)
    garbage = IncomingRecord(
        b'{"command_id": "c-p1", "user_id": "alice", "amount": "NaN"}',
        b"alice",
        "wallet.commands",
        2,
        11,
        b"intruder",
    )
    await intake.process(
        [
            from_producer("p1", 10, b"p2p"),
            garbage,
            from_producer("p1", 12, b"other-instance"),  # the same command sent again
            IncomingRecord(garbage.value, b"bob", "wallet.commands", 2, 13, b"first"),
            from_producer("p2", 14, b"trading", command_id="c-p3"),
        ]
    )
    assert [(r.command_id, r.status) for r in publisher.results] == [
        ("c-p1", "applied"),
        ("c-p1", "duplicate"),
        ("c-p3", "applied"),
        ("c-p1", "rejected"),
        ("c-p1", "rejected"),
    ]
    # The applied result goes back to the record that asked first; a refused record only names
    # the producer of an id no valid record claimed.
    assert publisher.producers == {"c-p1": b"p2p", "c-p3": b"trading"}


async def test_a_refused_record_is_answered_to_its_own_producer() -> None:
    publisher = RecordingPublisher()
    intake = CommandIntake(LedgerService(InMemoryLedgerStore(), backoff_seconds=0), publisher)
    refused = b'{"command_id": "c-x", "user_id": "alice", "amount": "NaN"}'
    await intake.process(
        [
            IncomingRecord(refused, b"alice", "wallet.commands", 2, 1, b"p2p"),
            IncomingRecord(refused, b"alice", "wallet.commands", 2, 2, b"later"),
        ]
    )
    assert [(r.command_id, r.status) for r in publisher.results] == [("c-x", "rejected")] * 2
    assert publisher.producers == {"c-x": b"p2p"}
