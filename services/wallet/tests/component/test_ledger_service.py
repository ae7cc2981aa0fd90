"""The batch handler over the in-memory store: exact balances, idempotency, retries, reconciliation."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from shared.messaging import (
    CommandResult,
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
)
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.balance_queries import balances_at
from wallet.application.ledger_service import LedgerService
from wallet.application.ports import ConcurrencyConflict, TransientStoreError
from wallet.application.reconciliation import replay, verify
from wallet.domain.ledger import Balances
from wallet.domain.records import IdempotencyKey, LedgerBatch, Outcome, WalletRecord


def credit(user: str, amount: str, ref: str, **extra: Any) -> CreditCommand:
    return CreditCommand(
        user_id=user,
        currency=extra.pop("currency", "BTC"),
        amount=amount,
        transaction_type="deposit_nowpayments",
        reference_id=ref,
        **extra,
    )


T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def store() -> InMemoryLedgerStore:
    return InMemoryLedgerStore()


@pytest.fixture
def ledger(store: InMemoryLedgerStore) -> LedgerService:
    return LedgerService(store)


async def apply_one(ledger: LedgerService, command: WalletCommand) -> CommandResult:
    report = await ledger.handle_batch([command])
    ((key, result),) = report.results
    assert key == command.user_id
    return result


def balance(result: CommandResult, user: str, currency: str = "BTC") -> tuple[str, str, str]:
    (snapshot,) = [b for b in result.balances if b.user_id == user and b.currency == currency]
    assert snapshot.total_balance == snapshot.available_balance + snapshot.locked_balance
    return (
        str(snapshot.available_balance.normalize()),
        str(snapshot.locked_balance.normalize()),
        str(snapshot.total_balance.normalize()),
    )


async def test_the_seed_api_end_to_end_with_exact_balances(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    # The refactor report's technical notes, in order, on a user who starts with 1.5 BTC.
    await apply_one(ledger, credit("user123", "1.5", "opening"))
    r = await apply_one(
        ledger,
        CreditCommand(
            user_id="user123",
            currency="BTC",
            amount="0.01",
            transaction_type="deposit_nowpayments",
            reference_id="payment_12345",
            metadata={"order_id": "o-1"},
        ),
    )
    assert (r.status, balance(r, "user123")) == ("applied", ("1.51", "0", "1.51"))
    r = await apply_one(
        ledger,
        DebitCommand(
            user_id="user123",
            currency="BTC",
            amount="0.005",
            transaction_type="withdrawal",
            reference_id="withdrawal_67890",
            metadata={"address": "1A1z", "fee": "0.0001"},
        ),
    )
    assert balance(r, "user123") == ("1.505", "0", "1.505")
    r = await apply_one(
        ledger,
        LockCommand(
            user_id="user123",
            currency="BTC",
            amount="0.05",
            transaction_type="p2p_escrow",
            reference_id="trade_abc123",
        ),
    )
    assert balance(r, "user123") == ("1.455", "0.05", "1.505")
    r = await apply_one(
        ledger,
        UnlockCommand(
            user_id="user123",
            currency="BTC",
            amount="0.05",
            transaction_type="p2p_cancelled",
            reference_id="trade_abc123",
        ),
    )
    assert balance(r, "user123") == ("1.505", "0", "1.505")
    await apply_one(
        ledger,
        LockCommand(
            user_id="user123",
            currency="BTC",
            amount="0.05",
            transaction_type="p2p_escrow",
            reference_id="trade_def456",
        ),
    )
    r = await apply_one(
        ledger,
        ReleaseLockedCommand(
            user_id="user123",
            currency="BTC",
            amount="0.05",
            transaction_type="p2p_completed",
            reference_id="trade_def456",
        ),
    )
    assert balance(r, "user123") == ("1.455", "0", "1.455")
    r = await apply_one(
        ledger,
        TransferCommand(
            user_id="user123",
            to_user="user456",
            currency="BTC",
            amount="0.01",
            transaction_type="p2p_payment",
            reference_id="trade_abc123",
        ),
    )
    assert balance(r, "user123") == ("1.445", "0", "1.445")
    assert balance(r, "user456") == ("0.01", "0", "0.01")

    rows = await store.history_of("user123", currency=None, limit=50, before=None)
    assert [
        (
            row.direction,
            row.transaction_type,
            str(row.amount.normalize()),
            str(row.balance_after.normalize()),
        )
        for row in rows
    ] == [
        ("debit", "p2p_payment", "0.01", "1.445"),
        ("release", "p2p_completed", "0.05", "1.455"),
        ("lock", "p2p_escrow", "0.05", "1.455"),
        ("unlock", "p2p_cancelled", "0.05", "1.505"),
        ("lock", "p2p_escrow", "0.05", "1.455"),
        ("debit", "withdrawal", "0.005", "1.505"),
        ("credit", "deposit_nowpayments", "0.01", "1.51"),
        ("credit", "deposit_nowpayments", "1.5", "1.5"),
    ]
    (payment,) = [row for row in rows if row.reference_id == "payment_12345"]
    assert payment.metadata == {"order_id": "o-1"}
    assert await verify(store) == []


async def test_the_same_command_five_times_applies_once(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    command = credit("alice", "0.01", "payment_1")
    statuses = []
    for _ in range(5):
        resend = command.model_copy(update={"command_id": f"resend-{len(statuses)}"})
        statuses.append((await apply_one(ledger, resend)).status)
    assert statuses == ["applied", "duplicate", "duplicate", "duplicate", "duplicate"]
    # Each redelivery publishes the applied event again, with the same transaction id.
    again = await ledger.handle_batch([command])
    assert [e.transaction_id for e in again.events] == [
        store.outcomes[command.idempotency_key].transaction_id
    ]
    assert store.wallets[("alice", "BTC")].balances == Balances(available=D("0.01"))
    assert len(store.outcomes) == 1
    assert len(store.history) == 1


async def test_duplicates_inside_one_batch_apply_once_and_answer_like_the_first(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    command = credit("alice", "0.01", "payment_1")
    report = await ledger.handle_batch([command] * 3)
    results = [result for _, result in report.results]
    assert [r.status for r in results] == ["applied", "duplicate", "duplicate"]
    assert {r.transaction_id for r in results} == {results[0].transaction_id}
    assert results[2].original_status == "applied"
    assert balance(results[2], "alice") == ("0.01", "0", "0.01")
    assert len(report.events) == 1


async def test_same_key_with_another_amount_is_an_idempotency_conflict(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    await apply_one(ledger, credit("alice", "0.01", "payment_1"))
    result = await apply_one(ledger, credit("alice", "0.02", "payment_1"))
    assert (result.status, result.reason) == ("rejected", "idempotency_conflict")
    assert store.wallets[("alice", "BTC")].balances.available == D("0.01")
    # The first outcome still answers the first request.
    assert (await apply_one(ledger, credit("alice", "0.01", "payment_1"))).status == "duplicate"


async def test_an_over_debit_is_rejected_changes_nothing_and_stays_rejected(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    await apply_one(ledger, credit("alice", "1", "p1"))
    over = DebitCommand(
        user_id="alice",
        currency="BTC",
        amount="1.00000001",
        transaction_type="withdrawal",
        reference_id="w1",
    )
    result = await apply_one(ledger, over)
    assert (result.status, result.reason) == ("rejected", "insufficient_funds")
    assert balance(result, "alice") == ("1", "0", "1")
    # Money arriving later does not change the recorded answer: outcomes are final.
    await apply_one(ledger, credit("alice", "5", "p2"))
    again = await apply_one(ledger, over)
    assert (again.status, again.original_status, again.reason) == (
        "duplicate",
        "rejected",
        "insufficient_funds",
    )
    assert store.wallets[("alice", "BTC")].balances.available == D("6")
    assert await verify(store) == []


async def test_commands_in_a_batch_see_the_effects_of_earlier_ones(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    funding = CreditCommand(
        user_id="treasurer",
        currency="ETH",
        amount="20",
        transaction_type="liquidity_funding",
        reference_id="fund-1",
    )
    await ledger.handle_batch([funding])
    batch: list[WalletCommand] = [
        credit("alice", "1", "p1"),
        TransferCommand(
            user_id="alice",
            to_user="bob",
            currency="BTC",
            amount="0.6",
            transaction_type="p2p_payment",
            reference_id="t1",
        ),
        TransferCommand(
            user_id="alice",
            to_user="bob",
            currency="BTC",
            amount="0.6",
            transaction_type="p2p_payment",
            reference_id="t2",
        ),
        LockCommand(
            user_id="bob",
            currency="BTC",
            amount="0.6",
            transaction_type="p2p_escrow",
            reference_id="trade",
        ),
        TransferLockedCommand(
            user_id="bob",
            to_user="carol",
            currency="BTC",
            amount="0.6",
            fee="0.006",
            transaction_type="p2p_completed",
            reference_id="trade",
        ),
        ExchangeCommand(
            user_id="carol",
            currency="BTC",
            amount="0.5",
            fee="0.005",
            receive_currency="ETH",
            receive_amount="12.5",
            transaction_type="swap",
            reference_id="s1",
        ),
    ]
    report = await ledger.handle_batch(batch)
    assert [(r.status, r.reason) for _, r in report.results] == [
        ("applied", None),
        ("applied", None),
        ("rejected", "insufficient_funds"),
        ("applied", None),
        ("applied", None),
        ("applied", None),
    ]
    assert store.wallets[("alice", "BTC")].balances == Balances(available=D("0.4"))
    assert store.wallets[("bob", "BTC")].balances == Balances()
    assert store.wallets[("carol", "BTC")].balances == Balances(available=D("0.094"))
    assert store.wallets[("carol", "ETH")].balances == Balances(available=D("12.5"))
    assert store.accounts == {
        ("external:nowpayments", "BTC"): D("-1"),
        ("platform:fees", "BTC"): D("0.011"),
        ("platform:liquidity", "BTC"): D("0.495"),
        ("platform:liquidity", "ETH"): D("7.5"),
        ("external:treasury", "ETH"): D("-20"),
    }
    # Versions count the transactions that touched each wallet.
    assert store.wallets[("bob", "BTC")].version == 3
    assert len(report.events) == 5
    assert all(e.is_balanced() for e in report.events)
    assert await verify(store) == []


async def test_a_batch_costs_three_store_calls_whatever_its_size(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    commands = [credit(f"user{i % 40}", "0.001", f"p{i}") for i in range(200)]
    await ledger.handle_batch(commands)
    assert store.round_trips == 3
    await ledger.handle_batch(commands)  # all duplicates: nothing to decide, nothing to write
    assert store.round_trips == 4


class FlakyStore(InMemoryLedgerStore):
    """Fails the first commits as a racing consumer would, after changing what it raced on."""

    def __init__(self, conflicts: int) -> None:
        super().__init__()
        self.conflicts = conflicts
        self.commits = 0

    async def commit(self, batch: LedgerBatch) -> None:
        self.commits += 1
        if self.conflicts:
            self.conflicts -= 1
            # Another writer credited alice in between: the version guard must notice.
            record = self.wallets[("alice", "BTC")]
            self.wallets[record.key] = replace(
                record,
                balances=record.balances.moved("available", D("1")),
                version=record.version + 1,
            )
            self.accounts[("external:other", "BTC")] = (
                self.accounts.get(("external:other", "BTC"), D(0)) - 1
            )
        await super().commit(batch)


async def test_a_version_conflict_retries_the_whole_batch_against_fresh_state() -> None:
    store = FlakyStore(conflicts=0)
    ledger = LedgerService(store, backoff_seconds=0)
    await ledger.handle_batch([credit("alice", "1", "p1")])
    store.conflicts = 2
    report = await ledger.handle_batch(
        [
            DebitCommand(
                user_id="alice",
                currency="BTC",
                amount="0.5",
                transaction_type="withdrawal",
                reference_id="w1",
            )
        ]
    )
    # Two racing credits of 1 landed between read and commit; the third attempt saw them. Exactly
    # one decision was committed, against the balance that was really there.
    assert report.attempts == 3
    assert [r.status for _, r in report.results] == ["applied"]
    assert balance(report.results[0][1], "alice") == ("2.5", "0", "2.5")
    assert store.wallets[("alice", "BTC")].balances.available == D("2.5")
    assert len(store.outcomes) == 2


async def test_a_wallets_times_grow_with_its_versions_whatever_the_writers_clocks(
    store: InMemoryLedgerStore,
) -> None:
    """Two wallet processes on one wallet (a transfer is handled on its payer's partition), the
    second's clock 40 ms behind: its later transfer was stamped before the first's credit, so the
    balances ?at= an hour later left the transfer out (1 BTC where the wallet holds 3) and
    newest-first history showed them the wrong way round. It is stamped just after it now."""
    ahead = LedgerService(store, clock=lambda: T0 + timedelta(milliseconds=40))
    behind = LedgerService(store, clock=lambda: T0)
    await behind.handle_batch([credit("vic", "5", "dep-v")])
    await ahead.handle_batch([credit("una", "1", "dep-u")])
    transfer = TransferCommand(
        user_id="vic",
        to_user="una",
        currency="BTC",
        amount="2",
        transaction_type="p2p_payment",
        reference_id="pay-1",
    )
    await behind.handle_batch([transfer])
    rows = await store.history_of("una", currency=None, limit=10, before=None)
    assert [(r.reference_id, r.timestamp - T0) for r in rows] == [
        ("pay-1", timedelta(milliseconds=41)),
        ("dep-u", timedelta(milliseconds=40)),
    ]
    [then] = await balances_at(store, "una", T0 + timedelta(hours=1))
    assert then.balances.available == D("3")
    [wallet] = await store.wallets_of("una")
    assert (wallet.version, wallet.last_updated) == (2, T0 + timedelta(milliseconds=41))
    # One batch, one time: the payer's row carries it too.
    [payer] = await store.history_of("vic", currency=None, limit=1, before=None)
    assert payer.timestamp == T0 + timedelta(milliseconds=41)


async def test_a_wallets_times_grow_when_two_writers_share_a_millisecond(
    store: InMemoryLedgerStore,
) -> None:
    """Two wallet processes whose clocks read the same millisecond: the second change was stamped
    with the first's time, and the tie was broken by transaction id, which grows only within one
    process. Here the second process's ids are smaller: ?at= showed the older balance and history
    put the older row first. A change is stamped after its wallet's last one now."""
    first_writer = LedgerService(store, clock=lambda: T0, new_id=lambda: "f" * 32)
    second_writer = LedgerService(store, clock=lambda: T0, new_id=lambda: "0" * 32)
    await first_writer.handle_batch([credit("una", "1", "dep-1")])
    await second_writer.handle_batch([credit("una", "2", "dep-2")])
    rows = await store.history_of("una", currency=None, limit=10, before=None)
    assert [(r.reference_id, r.timestamp - T0) for r in rows] == [
        ("dep-2", timedelta(milliseconds=1)),
        ("dep-1", timedelta(0)),
    ]
    [then] = await balances_at(store, "una", T0 + timedelta(seconds=5))
    assert then.balances.available == D("3")


class LostCommitAnswerStore(InMemoryLedgerStore):
    """Commits, then reports a failure (a commit whose answer was lost on the way back; the
    embedded MongoDB also keeps commits it refuses)."""

    def __init__(self, lost: int) -> None:
        super().__init__()
        self.lost = lost

    async def commit(self, batch: LedgerBatch) -> None:
        await super().commit(batch)
        if self.lost:
            self.lost -= 1
            raise TransientStoreError("connection closed before the commit was acknowledged")


async def test_a_commit_that_went_through_although_reported_failed_answers_applied() -> None:
    store = LostCommitAnswerStore(lost=1)
    ledger = LedgerService(store, backoff_seconds=0)
    first = credit("alice", "1", "p1")
    report = await ledger.handle_batch(
        [first, credit("bob", "2", "p2"), credit("alice", "1", "p1")]
    )
    # The retry finds its own outcomes stored: this delivery's, answered as decided; the third
    # command is a real second delivery of p1, a duplicate.
    assert report.attempts == 2
    assert [(r.status, r.original_status) for _, r in report.results] == [
        ("applied", None),
        ("applied", None),
        ("duplicate", "applied"),
    ]
    assert (
        report.results[0][1].transaction_id == store.outcomes[first.idempotency_key].transaction_id
    )
    assert [e.reference_id for e in report.events] == ["p1", "p2"]
    assert store.wallets[("alice", "BTC")].balances.available == D("1")
    # A later redelivery of the same command is a duplicate, as before.
    again = await ledger.handle_batch([first])
    assert [(r.status, r.original_status) for _, r in again.results] == [("duplicate", "applied")]


class FailingOver(LostCommitAnswerStore):
    """A commit lands but its answer is lost, then the next read fails too (a failover): two
    failures in a row, so the batch is split."""

    def __init__(self) -> None:
        super().__init__(lost=1)
        self.reads_failing = 0

    async def commit(self, batch: LedgerBatch) -> None:
        try:
            await super().commit(batch)
        except TransientStoreError:
            self.reads_failing = 1  # the failover goes on: the retry's first read fails too
            raise

    async def find_outcomes(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, Outcome]:
        if self.reads_failing:
            self.reads_failing -= 1
            raise TransientStoreError("no primary")
        return await super().find_outcomes(keys)


@pytest.mark.parametrize(
    ("second", "answer"),
    [
        (credit("alice", "5", "p1"), ("rejected", None, "idempotency_conflict")),
        (credit("alice", "1", "p1"), ("duplicate", "applied", None)),
    ],
    ids=["conflicting", "resent"],
)
async def test_a_split_after_a_lost_commit_answer_still_tells_conflicts_and_duplicates(
    second: CreditCommand, answer: tuple[str, str | None, str | None]
) -> None:
    """Before, both halves of the split took the key for this delivery's own outcome: the
    conflicting command was answered applied with the first one's transaction, and a resend
    applied instead of duplicate (money still moved once)."""
    store = FailingOver()
    ledger = LedgerService(store, backoff_seconds=0)
    first = credit("alice", "1", "p1")
    report = await ledger.handle_batch([first, second])
    assert report.splits == 1
    (_, applied), (_, other) = report.results
    assert (applied.status, applied.original_status) == ("applied", None)
    assert applied.transaction_id == store.outcomes[first.idempotency_key].transaction_id
    assert (other.status, other.original_status, other.reason) == answer
    assert store.wallets[("alice", "BTC")].balances.available == D("1")


async def test_retries_give_up_after_max_attempts() -> None:
    store = FlakyStore(conflicts=0)
    ledger = LedgerService(store, backoff_seconds=0, max_attempts=3)
    await ledger.handle_batch([credit("alice", "1", "p1")])
    store.conflicts = 10
    with pytest.raises(ConcurrencyConflict):
        await ledger.handle_batch([credit("alice", "1", "p2")])
    assert ("credit", "deposit_nowpayments", "p2") not in store.outcomes


async def test_verify_names_a_corrupted_wallet_and_replay_repairs_it(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    await ledger.handle_batch(
        [
            credit("alice", "1", "p1"),
            credit("bob", "2", "p2"),
            LockCommand(
                user_id="bob",
                currency="BTC",
                amount="0.5",
                transaction_type="p2p_escrow",
                reference_id="l1",
            ),
        ]
    )
    bob = store.wallets[("bob", "BTC")]
    store.wallets[bob.key] = replace(bob, balances=bob.balances.moved("available", D("100")))
    differences = await verify(store)
    assert [str(d) for d in differences] == [
        "wallet bob/BTC: available_balance expected 1.5, found 101.5",
        "wallet bob/BTC: total_balance expected 2, found 102",
        "currency BTC: sum of all accounts expected 0, found 100",
    ]
    await replay(store)
    assert await verify(store) == []
    assert store.wallets[("bob", "BTC")].balances == Balances(available=D("1.5"), locked=D("0.5"))


class CommittingDuringVerify(InMemoryLedgerStore):
    """The wallet commits a batch while verify reads: after the view is taken, or (read from the
    live store, as verify did before) between its reads of the events and of the wallets."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger: LedgerService | None = None
        self.committed = False

    async def commit_once(self) -> None:
        if not self.committed and self.ledger is not None:
            self.committed = True
            await self.ledger.handle_batch(
                [
                    credit("alice", "1.5", "live-deposit"),
                    TransferCommand(user_id="alice", to_user="carol", currency="BTC",
                                    amount="0.1", transaction_type="p2p_payment",
                                    reference_id="live-transfer"),
                ]
            )  # fmt: skip

    @asynccontextmanager
    async def reading_at_one_instant(self) -> AsyncIterator[InMemoryLedgerStore]:
        async with super().reading_at_one_instant() as view:
            await self.commit_once()
            yield view

    async def all_wallets(self) -> AsyncIterator[WalletRecord]:
        await self.commit_once()
        async for wallet in super().all_wallets():
            yield wallet


async def test_verify_is_not_misled_by_a_batch_committed_while_it_reads() -> None:
    """A correct ledger: before, verify listed 11 differences (alice's balance, carol's wallet
    and history rows "absent", external:nowpayments) and exited 1, and the runbook has it run
    every 15 minutes beside the wallet."""
    store = CommittingDuringVerify()
    store.ledger = LedgerService(store)
    await store.ledger.handle_batch([credit("alice", "1", "p1"), credit("bob", "2", "p2")])

    assert await verify(store) == []
    assert store.committed  # the batch did land while verify ran
    assert await verify(store) == []  # and is verified in full the next time
    assert ("carol", "BTC") in store.wallets


async def test_replay_rebuilds_projections_identical_to_the_live_ones(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    await ledger.handle_batch([credit(f"u{i % 3}", "1", f"p{i}") for i in range(9)])
    await ledger.handle_batch(
        [
            TransferCommand(
                user_id="u0",
                to_user="u1",
                currency="BTC",
                amount="0.5",
                transaction_type="p2p_payment",
                reference_id="t1",
            )
        ]
    )
    live = (dict(store.wallets), dict(store.history), dict(store.accounts))
    await replay(store)
    assert (store.wallets, store.history, store.accounts) == live


@pytest.mark.parametrize(
    ("transaction_type", "bucket"),
    [
        ("deposit_nowpayments", "available"),
        ("savings_interest", "savings"),
        ("legacy_migration_savings", "savings"),
        ("legacy_migration_locked", "locked"),
    ],
)
async def test_a_credit_into_any_bucket_is_a_credit_of_what_arrived_in_the_history(
    store: InMemoryLedgerStore, ledger: LedgerService, transaction_type: str, bucket: str
) -> None:
    command = CreditCommand(
        user_id="u",
        currency="BTC",
        amount="0.25",
        transaction_type=transaction_type,
        reference_id=f"ref-{transaction_type}",
    )
    result = await apply_one(ledger, command)
    assert result.status == "applied", result.reason
    [row] = await store.history_of("u", currency=None, limit=10, before=None)
    assert (row.direction, row.amount) == ("credit", D("0.25"))
    after = {
        "available": row.balance_after,
        "locked": row.locked_balance_after,
        "savings": row.savings_balance_after,
    }
    assert after == {b: D("0.25") if b == bucket else D(0) for b in after}
