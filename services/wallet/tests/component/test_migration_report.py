"""The migration report's verdict and its table say the same thing: a currency line says `matches`
only when its total and every migrated wallet in it equal the legacy sums, every difference and
every opening transaction that did not apply is listed, and `match: NO` says which of them made
it NO. Driven through `migrate` with the in-memory ledger and a sender that applies each opening
credit through the ledger service, as the running wallet would."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from shared.messaging import CreditCommand, TransferCommand, WalletCommand
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ledger_service import LedgerService
from wallet.application.migration import (
    MigrationReport,
    SendOutcome,
    WalletCommandSender,
    migrate,
)
from wallet.domain.migration import CollectionMapping, OpeningLine

D = Decimal
CRYPTO = CollectionMapping(
    "crypto_balances", "user_id", "coin", available_field="balance", locked_field="locked"
)
LEGACY = [
    {"_id": "a", "user_id": "alice", "coin": "BTC", "balance": "1.5"},
    {"_id": "b", "user_id": "bob", "coin": "BTC", "balance": "0.5"},
]


class Source:
    """The legacy collections, in memory."""

    def __init__(self, documents: Sequence[Mapping[str, Any]]) -> None:
        self._documents = documents

    async def documents(self, collection: str) -> AsyncIterator[Mapping[str, Any]]:
        for document in self._documents:
            yield document

    async def preserve(self, collections: Sequence[str]) -> None:
        pass


class LedgerSender:
    """Applies each opening credit through the ledger service; `then` runs after the credits
    (another command reaching the ledger before migrate reads it back), `lost` names the
    references whose result never came back (the credit applied all the same)."""

    def __init__(
        self,
        ledger: LedgerService,
        then: Sequence[WalletCommand] = (),
        lost: frozenset[str] = frozenset(),
    ) -> None:
        self._ledger = ledger
        self._then = then
        self._lost = lost

    async def send(self, lines: Sequence[OpeningLine]) -> list[SendOutcome]:
        outcomes = []
        for line in lines:
            command = CreditCommand(
                user_id=line.user_id,
                currency=line.currency,
                amount=line.amount,
                transaction_type=line.transaction_type,
                reference_id=line.reference_id,
            )
            report = await self._ledger.handle_batch([command])
            [(_, result)] = report.results
            if line.reference_id in self._lost:
                outcomes.append(SendOutcome(line, "timeout", reason="no result in time"))
            else:
                outcomes.append(SendOutcome(line, result.status, result.original_status))
        if self._then:
            await self._ledger.handle_batch(list(self._then))
        return outcomes


async def run(sender: Callable[[LedgerService], LedgerSender]) -> MigrationReport:
    store = InMemoryLedgerStore()
    ids = itertools.count(1)
    ledger = LedgerService(store, new_id=lambda: f"tx{next(ids):05d}")
    return await migrate([CRYPTO], Source(LEGACY), store, sender(ledger))


def verification(report: MigrationReport) -> list[str]:
    """The table's lines from `Post-Migration Verification` on."""
    lines = report.tables().splitlines()
    return lines[lines.index("Post-Migration Verification") :]


def transfer(amount: str) -> TransferCommand:
    return TransferCommand(
        user_id="alice",
        to_user="bob",
        currency="BTC",
        amount=amount,
        transaction_type="p2p_payment",
        reference_id="t1",
    )


def deposit(user: str, currency: str, amount: str) -> CreditCommand:
    return CreditCommand(
        user_id=user,
        currency=currency,
        amount=amount,
        transaction_type="deposit_nowpayments",
        reference_id=f"payment-{user}-{currency}",
    )


def table(
    *totals: str, wallets: int = 2, applied: int = 2, notes: Sequence[str] = (), match: str = "yes"
) -> list[str]:
    """The verification table of the two legacy users' migration."""
    return [
        "Post-Migration Verification",
        "Total Users: 2 (matches)",
        *(f"Total {line}" for line in totals),
        "Collection:",
        f"  - wallets: {wallets} records (2 legacy records)",
        f"Transactions: 2 planned, {applied} applied now, {2 - applied} failed",
        *(f"  ! {note}" for note in notes),
        f"match: {match}",
    ]


async def test_a_clean_migration_matches_on_every_line() -> None:
    report = await run(LedgerSender)
    assert (report.match, report.exit_code) == (True, 0)
    assert verification(report) == table("BTC: available 2, locked 0, savings 0 (matches)")


async def test_wallets_that_differ_while_the_total_matches_make_their_currency_line_differ() -> (
    None
):
    # Alice paid bob 0.1 between the opening credits and the read-back: the BTC total is the
    # legacy one, both wallets are not. The line said "(matches)" above "match: NO".
    report = await run(lambda ledger: LedgerSender(ledger, then=[transfer("0.1")]))
    assert (report.match, report.exit_code) == (False, 1)
    assert verification(report) == table(
        "BTC: available 2, locked 0, savings 0 (DIFFERS: the total matches, 2 wallets differ)",
        notes=[
            "alice BTC available: legacy 1.5, ledger 1.4",
            "bob BTC available: legacy 0.5, ledger 0.6",
        ],
        match="NO (2 differences)",
    )


async def test_a_currency_the_legacy_rows_never_held_is_a_difference() -> None:
    # A deposit of ETH reached alice before migrate read her wallets back: the ETH line said
    # DIFFERS, yet no difference was listed and the report said "match: yes" (exit 0).
    report = await run(lambda ledger: LedgerSender(ledger, then=[deposit("alice", "ETH", "0.1")]))
    assert (report.match, report.exit_code) == (False, 1)
    assert report.differences == ["alice ETH available: legacy 0, ledger 0.1"]
    assert report.to_json()["differences"] == report.differences
    assert verification(report) == table(
        "BTC: available 2, locked 0, savings 0 (matches)",
        "ETH: available 0.1, locked 0, savings 0 (DIFFERS: available +0.1, 1 wallet differs)",
        wallets=3,
        notes=["alice ETH available: legacy 0, ledger 0.1"],
        match="NO (1 difference)",
    )


async def test_a_deposit_before_migrate_shows_how_much_the_total_differs() -> None:
    report = await run(lambda ledger: LedgerSender(ledger, then=[deposit("bob", "BTC", "0.25")]))
    assert (report.match, report.exit_code) == (False, 1)
    assert verification(report) == table(
        "BTC: available 2.25, locked 0, savings 0 (DIFFERS: available +0.25, 1 wallet differs)",
        notes=["bob BTC available: legacy 0.5, ledger 0.75"],
        match="NO (1 difference)",
    )


async def test_a_transaction_without_a_result_is_listed_with_why_the_match_is_no() -> None:
    # Bob's credit applied but its result never came back: every balance matches, and the report
    # said "match: NO" under lines that all matched, giving only a count of failed transactions.
    report = await run(
        lambda ledger: LedgerSender(ledger, lost=frozenset({"legacy:crypto_balances:b"}))
    )
    assert (report.match, report.exit_code) == (False, 1)
    assert report.differences == []
    assert verification(report) == table(
        "BTC: available 2, locked 0, savings 0 (matches)",
        applied=1,
        notes=[
            "not applied: bob BTC available 0.5 (legacy:crypto_balances:b, legacy_migration):"
            " timeout, no result in time"
        ],
        match="NO (1 opening transaction not applied)",
    )


class CommandBuildingWallet:
    """Builds each credit's command as the wallet client does, and answers it applied."""

    def __init__(self) -> None:
        self.sent: list[CreditCommand] = []

    async def credit(self, **fields: Any) -> Any:
        fields.pop("result_timeout")
        command = CreditCommand(**fields)
        self.sent.append(command)
        return SimpleNamespace(status="applied", original_status=None, reason=None)


async def test_a_line_the_command_refuses_is_one_rejected_outcome_not_a_dead_run() -> None:
    """Planning lists such rows as invalid; were one to reach the sender all the same, its
    refusal raised out of the whole send (other credits already out, no report written)."""
    lines = [
        OpeningLine("c", "d1", "alice", "BTC", "available", Decimal(1)),
        OpeningLine("c", "d2", "bob\x01", "BTC", "available", Decimal(1)),
        OpeningLine("c", "d3", "carol", "BTC", "available", Decimal(1)),
    ]
    wallet = CommandBuildingWallet()
    outcomes = await WalletCommandSender(wallet).send(lines)
    assert [(o.line.user_id, o.status) for o in outcomes] == [
        ("alice", "applied"),
        ("bob\x01", "rejected"),
        ("carol", "applied"),
    ]
    assert outcomes[1].reason is not None
    assert outcomes[1].reason.startswith("unsendable: invalid_field: user_id")
    assert [c.user_id for c in wallet.sent] == ["alice", "carol"]


FIAT = CollectionMapping("fiat_balances", "user_id", "currency", available_field="balance")
LONG_GBP = ".005" + "1" * 60  # 64 characters, 61 significant digits: more than the ledger's 60


async def test_a_rounding_past_the_ledgers_digits_is_reported_by_a_dry_run_and_a_real_one() -> None:
    # The difference died with Inexact: the dry run with a traceback, the real run after crediting
    # 0.01 GBP, with no report written.
    legacy = Source([{"_id": "x", "user_id": "bob", "currency": "GBP", "balance": LONG_GBP}])
    store = InMemoryLedgerStore()
    difference = "0.004" + "8" * 59 + "9"
    rounded = {
        "collection": "fiat_balances",
        "_id": "x",
        "user_id": "bob",
        "currency": "GBP",
        "field": "balance",
        "original": LONG_GBP,
        "migrated": "0.01",
        "difference": difference,
    }
    listed = f"  - fiat_balances x balance: {LONG_GBP} -> 0.01 ({difference})"

    dry = await migrate([FIAT], legacy, store, None, dry_run=True)
    assert dry.to_json()["rounded"] == [rounded]
    assert listed in dry.tables().splitlines()
    assert dry.exit_code == 0
    assert await store.wallets_of("bob") == []

    report = await migrate([FIAT], legacy, store, LedgerSender(LedgerService(store)))
    assert (report.match, report.exit_code) == (True, 0)
    assert report.to_json()["rounded"] == [rounded]
    assert listed in report.tables().splitlines()
    [wallet] = await store.wallets_of("bob")
    assert wallet.balances.available == D("0.01")


async def test_documents_whose_ids_read_the_same_block_the_run_or_are_skipped() -> None:
    # `1` and `"1"` made one reference: the second credit came back a duplicate, counted as
    # already applied with nothing failed, and its balance never came in, run after run.
    legacy = Source(
        [
            {"_id": 1, "user_id": "alice", "coin": "btc", "balance": 1.0},
            {"_id": "1", "user_id": "alice", "coin": "BTC", "balance": "1"},
        ]
    )
    ambiguous = {
        "collection": "crypto_balances",
        "_id": "1",
        "user_id": "alice",
        "currency": "BTC",
        "field": "_id",
        "original": "1",
        "reason": "ambiguous_document_id",
    }
    store = InMemoryLedgerStore()
    blocked = await migrate([CRYPTO], legacy, store, LedgerSender(LedgerService(store)))
    assert (blocked.blocked, blocked.exit_code) == (True, 1)
    assert blocked.to_json()["invalid"] == [ambiguous]
    assert "  - crypto_balances 1 _id: ambiguous_document_id (1)" in blocked.tables()
    assert await store.wallets_of("alice") == []

    for _ in range(2):
        report = await migrate(
            [CRYPTO], legacy, store, LedgerSender(LedgerService(store)), skip_invalid=True
        )
        assert (report.match, report.exit_code) == (True, 0)
        report_json = report.to_json()
        assert report_json["invalid"] == [ambiguous]
        assert report_json["skipped_invalid"] is True
        assert report_json["pre"]["totals"]["BTC"]["available"] == "1"
        assert report_json["transactions"]["planned"] == 1
    [wallet] = await store.wallets_of("alice")
    assert wallet.balances.available == D(1)


class FlakyBroker:
    """Answers credits applied, but fails the ones named in `failing` as a broker away does, and
    counts how many credits are awaiting their result at once."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.sent: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def credit(self, **fields: Any) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            if fields["reference_id"] in self.failing:
                raise RuntimeError("KafkaConnectionError: unable to bootstrap")
            self.sent.append(fields["reference_id"])
            return SimpleNamespace(status="applied", original_status=None, reason=None)
        finally:
            self.in_flight -= 1


def lines(count: int) -> list[OpeningLine]:
    return [
        OpeningLine("c", f"d{n}", f"u{n}", "BTC", "available", Decimal(1)) for n in range(count)
    ]


async def test_a_broker_error_is_that_lines_outcome_and_the_rest_are_sent() -> None:
    """The broker's errors are not TimeoutError or ValueError: one of them raised out of the
    whole send, other credits already out and no report written."""
    broker = FlakyBroker(failing=frozenset({"legacy:c:d1"}))
    outcomes = await WalletCommandSender(broker).send(lines(3))
    assert [(o.line.document_id, o.status) for o in outcomes] == [
        ("d0", "applied"),
        ("d1", "error"),
        ("d2", "applied"),
    ]
    assert (
        outcomes[1].reason == "RuntimeError: KafkaConnectionError: unable to bootstrap; run again"
    )
    assert broker.sent == ["legacy:c:d0", "legacy:c:d2"]


async def test_lines_are_sent_by_as_many_senders_as_in_flight_allows() -> None:
    broker = FlakyBroker()
    outcomes = await WalletCommandSender(broker, in_flight=7).send(lines(100))
    assert [o.line.document_id for o in outcomes] == [f"d{n}" for n in range(100)]
    assert broker.most_in_flight == 7
    assert await WalletCommandSender(broker, in_flight=7).send([]) == []


async def test_opening_credits_of_rows_this_run_does_not_plan_are_listed() -> None:
    """Bob's row was migrated, then lost its user id and was skipped by the next run: his credit
    is still in the ledger, and the report said everything matched without a word of it."""
    store = InMemoryLedgerStore()
    ledger = LedgerService(store)
    first = await migrate([CRYPTO], Source(LEGACY), store, LedgerSender(ledger))
    assert first.opening_differences == []
    assert first.to_json()["opened_in_all"] == {"totals": {"BTC": "2"}, "differences": []}
    without_bob = [LEGACY[0], {**LEGACY[1], "user_id": None}]
    again = await migrate(
        [CRYPTO], Source(without_bob), store, LedgerSender(ledger), skip_invalid=True
    )
    note = (
        "BTC: the ledger opened 2 from external:legacy_migration in all, the legacy rows add up"
        " to 1.5"
    )
    assert again.opening_differences == [note]
    assert again.to_json()["opened_in_all"] == {"totals": {"BTC": "2"}, "differences": [note]}
    assert verification(again)[-3:] == [
        "Opened from external:legacy_migration in all runs, against these rows:",
        f"  ! {note}",
        "match: yes",  # alice's wallet, the one this run migrated, is right
    ]
