"""The wave-2 ledger API through the batch handler: named holds, spot settlement, platform moves,
the registry, and batches the store keeps timing out on."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D
from typing import Any

import pytest

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    SettleTradeCommand,
    UnlockCommand,
    WalletCommand,
)
from wallet.adapters.memory_store import InMemoryLedgerStore
from wallet.application.ledger_service import BatchReport, LedgerService
from wallet.application.ports import StoreTimeout, TransientStoreError
from wallet.application.reconciliation import verify
from wallet.domain.ledger import Balances
from wallet.domain.records import LedgerBatch


@pytest.fixture
def store() -> InMemoryLedgerStore:
    return InMemoryLedgerStore()


@pytest.fixture
def ledger(store: InMemoryLedgerStore) -> LedgerService:
    return LedgerService(store, backoff_seconds=0)


def credit(
    user: str, currency: str, amount: str, ref: str, kind: str = "deposit_nowpayments"
) -> CreditCommand:
    return CreditCommand(
        user_id=user, currency=currency, amount=amount, transaction_type=kind, reference_id=ref
    )


def order_lock(user: str, currency: str, amount: str, order: str) -> LockCommand:
    return LockCommand(user_id=user, currency=currency, amount=amount, transaction_type="spot_order",
                       hold_id=order, reference_id=f"{order}:lock")  # fmt: skip


def fill(ref: str, quote: str, base: str, **extra: Any) -> SettleTradeCommand:
    spec: dict[str, Any] = {
        "user_id": "buyer", "to_user": "seller", "currency": "USDT", "amount": quote,
        "hold_id": "buy-1", "receive_currency": "BTC", "receive_amount": base,
        "counter_hold_id": "sell-1", "transaction_type": "spot_trade", "reference_id": ref,
    }  # fmt: skip
    return SettleTradeCommand(**{**spec, **extra})


def outcomes(report: BatchReport) -> list[tuple[str, str | None]]:
    return [(r.status, r.reason) for _, r in report.results]


def wallets(store: InMemoryLedgerStore) -> dict[tuple[str, str], Balances]:
    return {key: record.balances for key, record in store.wallets.items()}


async def test_an_order_is_filled_in_steps_from_its_named_hold_and_refunded(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    await ledger.handle_batch(
        [
            credit("buyer", "USDT", "1000", "d1"),
            credit("seller", "BTC", "0.02", "d2"),
            order_lock("buyer", "USDT", "1000", "buy-1"),
            order_lock("seller", "BTC", "0.02", "sell-1"),
        ]
    )
    report = await ledger.handle_batch(
        [
            fill("fill-1", "500", "0.01", fee="0.5", receive_fee="0.00001"),
            fill("fill-2", "450", "0.01", fee="0.45", receive_fee="0.00001"),
            # Price improvement: the rest of the buy order's hold goes back, a step of its own.
            UnlockCommand(
                user_id="buyer",
                currency="USDT",
                amount="50",
                transaction_type="spot_order",
                hold_id="buy-1",
                reference_id="buy-1:refund",
            ),
            # The hold is empty now: one more fill cannot be paid, and moves nothing.
            fill("fill-3", "0.000001", "0.00000001"),
        ]
    )
    assert outcomes(report) == [
        ("applied", None),
        ("applied", None),
        ("applied", None),
        ("rejected", "insufficient_funds"),
    ]
    assert wallets(store) == {
        ("buyer", "USDT"): Balances(available=D(50)),
        ("buyer", "BTC"): Balances(available=D("0.01998")),
        ("seller", "BTC"): Balances(),
        ("seller", "USDT"): Balances(available=D("949.05")),
    }
    assert store.wallets[("buyer", "USDT")].holds == ()
    assert store.accounts[("platform:fees", "USDT")] == D("0.95")
    assert store.accounts[("platform:fees", "BTC")] == D("0.00002")
    (event,) = [e for e in report.events if e.reference_id == "fill-1"]
    assert event.is_balanced()
    assert (event.type, event.user_id, event.to_user) == ("settle_trade", "buyer", "seller")
    assert len(event.postings) == 6
    assert await verify(store) == []


async def test_liquidity_covers_exchanges_in_batch_order_and_never_goes_below_zero(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    def swap(user: str, eth: str, ref: str, kind: str = "swap") -> ExchangeCommand:
        return ExchangeCommand(user_id=user, currency="BTC", amount="0.1", fee="0.001",
                               receive_currency="ETH", receive_amount=eth, transaction_type=kind,
                               reference_id=ref)  # fmt: skip

    await ledger.handle_batch([credit("alice", "BTC", "1", "d1"), credit("bob", "BTC", "1", "d2")])
    refused = await ledger.handle_batch([swap("alice", "1", "s0")])
    assert outcomes(refused) == [("rejected", "insufficient_liquidity")]
    assert (await ledger.handle_batch([swap("alice", "1", "s0")])).count("duplicate") == 1
    report = await ledger.handle_batch(
        [
            credit("treasurer", "ETH", "5", "fund-1", kind="liquidity_funding"),
            swap("alice", "3", "s1"),
            swap("bob", "2.5", "s2", kind="express_buy"),  # 2 ETH left: refused whole
            swap("bob", "2", "s3", kind="express_buy"),
        ]
    )
    assert outcomes(report) == [
        ("applied", None),
        ("applied", None),
        ("rejected", "insufficient_liquidity"),
        ("applied", None),
    ]
    (_, rejected) = report.results[2]
    assert rejected.detail == "platform:liquidity ETH is 2, 2.5 needed"
    assert store.accounts[("platform:liquidity", "ETH")] == 0
    assert ("treasurer", "ETH") not in store.wallets  # funding touches no user wallet
    assert wallets(store)[("bob", "BTC")] == Balances(available=D("0.9"))
    assert await verify(store) == []


async def test_platform_moves_pay_from_their_registered_accounts(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    report = await ledger.handle_batch(
        [
            credit("alice", "BTC", "1", "d1"),
            credit("carol", "BTC", "0.01", "ref-1", kind="referral_commission"),  # fees are empty
            credit("alice", "BTC", "0.001", "int-1", kind="savings_interest"),
            credit("dave", "GBP", "250.00", "bank-1", kind="deposit_bank_transfer"),
            credit("erin", "BTC", "0.3", "legacy-1", kind="legacy_migration_locked"),
            credit("erin", "BTC", "0.1", "legacy-2", kind="legacy_migration_savings"),
            UnlockCommand(
                user_id="erin",
                currency="BTC",
                amount="0.3",
                transaction_type="legacy_unlock",
                reference_id="legacy-1",
            ),
        ]
    )
    assert outcomes(report) == [
        ("applied", None),
        ("rejected", "insufficient_platform_funds"),
        *[("applied", None)] * 5,
    ]
    assert wallets(store)[("alice", "BTC")] == Balances(available=D(1), savings=D("0.001"))
    assert wallets(store)[("erin", "BTC")] == Balances(available=D("0.3"), savings=D("0.1"))
    assert store.accounts == {
        ("external:nowpayments", "BTC"): D(-1),
        ("platform:interest", "BTC"): D("-0.001"),
        ("external:bank", "GBP"): D(-250),
        ("external:legacy_migration", "BTC"): D("-0.4"),
    }
    assert await verify(store) == []


@pytest.mark.parametrize(
    "command",
    [
        credit("mallory", "BTC", "100", "x1", kind="deposit_printer"),
        credit("mallory", "BTC", "100", "x2", kind="p2p_payment"),
        LockCommand(
            user_id="mallory",
            currency="BTC",
            amount="1",
            transaction_type="internal_transfer",
            reference_id="x3",
        ),
    ],
)
async def test_an_unregistered_type_is_a_recorded_rejection_final_for_its_key(
    store: InMemoryLedgerStore, ledger: LedgerService, command: WalletCommand
) -> None:
    first = await ledger.handle_batch([command])
    assert outcomes(first) == [("rejected", "unknown_transaction_type")]
    assert (store.wallets, store.accounts, first.events) == ({}, {}, [])
    again = await ledger.handle_batch([command.model_copy(update={"command_id": "again"})])
    (_, result) = again.results[0]
    assert (result.status, result.original_status, result.reason) == (
        "duplicate",
        "rejected",
        "unknown_transaction_type",
    )


class SlowStore(InMemoryLedgerStore):
    """A slow database: a commit of more than `limit` outcomes fails with `error`."""

    def __init__(self, limit: int, error: TransientStoreError) -> None:
        super().__init__()
        self.limit, self.error = limit, error
        self.commits: list[int] = []
        self.refused: list[int] = []

    async def commit(self, batch: LedgerBatch) -> None:
        if len(batch.outcomes) > self.limit:
            self.refused.append(len(batch.outcomes))
            raise self.error
        self.commits.append(len(batch.outcomes))
        await super().commit(batch)


@pytest.mark.parametrize(
    ("error", "tries_per_size"),
    [
        # Out of time: the same request would be again, so it is split at once.
        (StoreTimeout("operation exceeded time limit"), 1),
        # Unavailable (a failover): tried again as is first, split only if it persists.
        (TransientStoreError("operation cancelled"), 2),
    ],
)
async def test_a_batch_the_database_keeps_failing_on_is_committed_in_smaller_parts(
    error: TransientStoreError, tries_per_size: int
) -> None:
    store = SlowStore(limit=40, error=error)
    ledger = LedgerService(store, backoff_seconds=0)
    commands = [credit(f"u{i % 7}", "BTC", "0.001", f"p{i}") for i in range(300)]
    commands.insert(150, commands[10].model_copy(update={"command_id": "resent"}))
    report = await ledger.handle_batch(commands)
    assert [r.reference_id for _, r in report.results] == [c.reference_id for c in commands]
    assert report.count("applied") == 300
    assert report.count("duplicate") == 1
    # 301 → 150 + 151 → four of ~75 → eight of ~38: seven splits, each size refused that often.
    assert report.splits == 7
    assert len(store.refused) == 7 * tries_per_size
    assert max(store.commits) <= 40
    assert sum(store.commits) == 300
    assert await verify(store) == []


async def test_verify_folds_each_wallet_in_the_order_of_its_committed_versions(
    store: InMemoryLedgerStore, ledger: LedgerService
) -> None:
    await ledger.handle_batch([credit("alice", "BTC", "1", "d1")])
    debit = DebitCommand(user_id="alice", currency="BTC", amount="1", transaction_type="withdrawal",
                         reference_id="w1")  # fmt: skip
    await ledger.handle_batch([debit])
    assert await verify(store) == []
    # Swap the versions the two outcomes committed: folded in that order, the debit comes first
    # and takes the wallet below zero, whatever the timestamps say.
    for outcome in list(store.outcomes.values()):
        (after,) = outcome.balances_after
        swapped = replace(after, version=3 - (after.version or 0))
        store.outcomes[outcome.key] = replace(outcome, balances_after=(swapped,))
    (difference,) = await verify(store)
    assert (difference.subject, difference.field) == ("events", "fold")
    assert "user:alice:available BTC would go negative" in difference.actual


async def test_later_batches_are_cut_to_the_size_that_went_through_which_grows_back() -> None:
    store = SlowStore(limit=40, error=StoreTimeout("operation exceeded time limit"))
    ledger = LedgerService(store, backoff_seconds=0, grow_after=3)
    await ledger.handle_batch([credit("u", "BTC", "0.001", f"a{i}") for i in range(100)])
    assert ledger.commit_limit == 25  # 100 → 50 → 25, which fit
    refused = len(store.refused)

    # The next batch goes in parts of the size that went through: nothing is refused.
    report = await ledger.handle_batch([credit("u", "BTC", "0.001", f"b{i}") for i in range(100)])
    assert (report.count("applied"), report.splits) == (100, 0)
    assert len(store.refused) == refused
    # Three commits of the full limit in a row: it doubles (the database has become fast).
    assert ledger.commit_limit == 50
    store.limit = 1_000
    await ledger.handle_batch([credit("u", "BTC", "0.001", f"c{i}") for i in range(300)])
    assert store.commits[-6:] == [50] * 6
    assert ledger.commit_limit == 100
