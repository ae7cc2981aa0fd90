"""The LedgerStore contract, run against the in-memory store and against MongoDB.

Driven through LedgerService (what production does) and through the port directly (what the
service relies on: all-or-nothing commits, version guards, unique keys, newest-first history).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.messaging import (
    CreditCommand,
    DebitCommand,
    ExchangeCommand,
    LockCommand,
    ReleaseLockedCommand,
    SavingsInCommand,
    SavingsOutCommand,
    TransferCommand,
    TransferLockedCommand,
    UnlockCommand,
    WalletCommand,
    parse_command,
)
from wallet.application.ledger_service import BatchReport, LedgerService
from wallet.application.ports import ConcurrencyConflict, LedgerStore
from wallet.application.reconciliation import Replay, replay, verify
from wallet.domain.accounts import user_account
from wallet.domain.ledger import Balances, Entry
from wallet.domain.projection import history_rows
from wallet.domain.records import (
    BalanceAfter,
    HistoryRow,
    LedgerBatch,
    Outcome,
    WalletRecord,
)

D = Decimal
DEPOSIT = "deposit_nowpayments"
NOWPAYMENTS = "external:nowpayments"
T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


class TickingClock:
    """One second later at every call: each batch gets its own millisecond-exact timestamp."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(seconds=1)
        return current


def make_service(store: LedgerStore, prefix: str = "tx") -> LedgerService:
    ids = itertools.count(1)
    # Zero-padded ids sort in the order they were made: tests can tell commit order from them.
    return LedgerService(
        store,
        clock=TickingClock(),
        new_id=lambda: f"{prefix}{next(ids):05d}",
        backoff_seconds=0.001,
    )


@pytest.fixture
def service(store: LedgerStore) -> LedgerService:
    return make_service(store)


def credit(user: str, currency: str, amount: str, ref: str, **extra: Any) -> CreditCommand:
    return CreditCommand(
        reference_id=ref,
        transaction_type=DEPOSIT,
        user_id=user,
        currency=currency,
        amount=amount,  # a wire string, parsed exactly
        **extra,
    )


def statuses(report: BatchReport) -> list[str | None]:
    return [result.status for _, result in report.results]


async def balances(store: LedgerStore, user: str) -> dict[str, Balances]:
    return {w.currency: w.balances for w in await store.wallets_of(user)}


async def snapshot(store: LedgerStore) -> tuple[Any, ...]:
    """Everything the store holds, to show that a refused commit wrote nothing."""
    outcomes = sorted([o.transaction_id async for o in store.all_outcomes()])
    wallets = sorted([(w.key, w) async for w in store.all_wallets()])
    history = sorted([(h.transaction_id, h) async for h in store.all_history()])
    return outcomes, wallets, history, await store.account_balances()


# Every command type, through the service --------------------------------------------------------


async def test_every_command_type_moves_money_exactly(
    store: LedgerStore, service: LedgerService
) -> None:
    a, b = "alice", "bob"
    batches: list[Sequence[WalletCommand]] = [
        [
            credit(a, "ETH", "10", "dep-a-eth"),
            credit(a, "BTC", "2", "dep-a-btc"),
            credit(b, "BTC", "1", "dep-b-btc"),
            CreditCommand(reference_id="fund-eth", transaction_type="liquidity_funding",
                          user_id="admin", currency="ETH", amount=D("10")),
        ],
        [
            LockCommand(reference_id="wd1", transaction_type="withdrawal_lock", user_id=a,
                        currency="BTC", amount=D("0.5")),
            UnlockCommand(reference_id="wd1", transaction_type="withdrawal_unlock", user_id=a,
                          currency="BTC", amount=D("0.1")),
            ReleaseLockedCommand(reference_id="wd1", transaction_type="withdrawal_release", user_id=a,
                                 currency="BTC", amount=D("0.2"), fee=D("0.0001")),
            TransferCommand(reference_id="gift1", transaction_type="p2p_payment", user_id=a,
                            to_user=b, currency="BTC", amount=D("0.3")),
        ],
        [
            LockCommand(reference_id="trade1", transaction_type="p2p_escrow", user_id=a,
                        currency="BTC", amount=D("0.1")),
            TransferLockedCommand(reference_id="trade1", transaction_type="p2p_completed",
                                  user_id=a, to_user=b, currency="BTC", amount=D("0.1"),
                                  fee=D("0.001")),
            ExchangeCommand(reference_id="swap1", transaction_type="swap", user_id=a,
                            currency="BTC", amount=D("0.5"), fee=D("0.001"),
                            receive_currency="ETH", receive_amount=D("7.25")),
            SavingsInCommand(reference_id="sv1", transaction_type="savings_deposit", user_id=a,
                             currency="ETH", amount=D("5")),
            SavingsOutCommand(reference_id="sv2", transaction_type="savings_withdrawal", user_id=a,
                              currency="ETH", amount=D("1.5")),
            DebitCommand(reference_id="wd2", transaction_type="withdrawal", user_id=b,
                         currency="BTC", amount=D("0.2")),
        ],
    ]  # fmt: skip
    for batch in batches:
        report = await service.handle_batch(batch)
        assert statuses(report) == ["applied"] * len(batch), report.results

    assert await balances(store, a) == {
        "BTC": Balances(available=D("0.7"), locked=D("0.2")),
        "ETH": Balances(available=D("13.75"), savings=D("3.5")),
    }
    assert await balances(store, b) == {"BTC": Balances(available=D("1.199"))}
    assert [w.currency for w in await store.wallets_of(a)] == ["BTC", "ETH"]  # sorted
    alice_btc = (await store.wallets_of(a))[0]
    assert alice_btc.version == 8  # every applied transaction that touched it
    assert alice_btc.created_at == T0
    assert alice_btc.last_updated == T0 + timedelta(seconds=2)
    assert await store.account_balances() == {
        (NOWPAYMENTS, "BTC"): D("-3"),
        (NOWPAYMENTS, "ETH"): D("-10"),
        ("external:withdrawals", "BTC"): D("0.3999"),
        ("external:treasury", "ETH"): D("-10"),
        ("platform:fees", "BTC"): D("0.0021"),
        ("platform:liquidity", "BTC"): D("0.499"),
        ("platform:liquidity", "ETH"): D("2.75"),
    }


async def test_eth_with_15_integer_digits_and_18_decimals_stays_exact(
    store: LedgerStore, service: LedgerService
) -> None:
    big = D("123456789012345.123456789012345678")
    one_wei = D("0.000000000000000001")
    await service.handle_batch([credit("whale", "ETH", str(big), "dep-big")])
    report = await service.handle_batch(
        [
            DebitCommand(reference_id="wd-wei", transaction_type="withdrawal", user_id="whale",
                         currency="ETH", amount=one_wei),
            SavingsInCommand(reference_id="sv-wei", transaction_type="savings_deposit", user_id="whale",
                             currency="ETH", amount=one_wei),
        ]
    )  # fmt: skip
    assert statuses(report) == ["applied", "applied"]

    left = D("123456789012345.123456789012345676")
    expected = Balances(available=left, savings=one_wei)
    assert await balances(store, "whale") == {"ETH": expected}
    newest = await store.history_of("whale", currency="ETH", limit=1, before=None)
    assert newest[0].balance_after == left
    assert newest[0].savings_balance_after == one_wei
    found = await store.find_outcomes([("savings_in", "savings_deposit", "sv-wei")])
    (outcome,) = found.values()
    assert outcome.balances_after == (BalanceAfter("whale", "ETH", expected, version=3),)
    assert outcome.command.amount == one_wei

    # A history row's amount is the size of the move, all 33 digits: abs() rounded it at 28.
    most = D("123456789012345.123456789012345675")
    moved = await service.handle_batch(
        [
            LockCommand(reference_id="lk-big", transaction_type="p2p_escrow", user_id="whale",
                        currency="ETH", amount=most),
            SavingsInCommand(reference_id="sv-big", transaction_type="savings_deposit",
                             user_id="whale", currency="ETH", amount=D("0.000000000000000001")),
        ]
    )  # fmt: skip
    assert statuses(moved) == ["applied", "applied"]
    rows = await store.history_of("whale", currency="ETH", limit=2, before=None)
    assert sorted((row.direction, row.amount) for row in rows) == [
        ("lock", most),
        ("savings_in", one_wei),
    ]


async def test_platform_account_sums_stay_exact_to_34_digits(
    store: LedgerStore, service: LedgerService
) -> None:
    # Platform accounts are kept by `$inc`; on the stand-in it rounded at 28 digits until its
    # server was given Decimal128's 34 (shared/infra/mongo_server.py).
    await service.handle_batch([credit("whale", "ETH", "123456789012345.123456789012345678", "d1")])
    await service.handle_batch([credit("krill", "ETH", "0.000000000000000001", "d2")])
    assert await store.account_balances() == {
        (NOWPAYMENTS, "ETH"): D("-123456789012345.123456789012345679")
    }


# Outcomes, duplicates and rejections -----------------------------------------------------------


async def test_outcomes_are_found_by_key_and_repeats_get_the_first_answer(
    store: LedgerStore, service: LedgerService
) -> None:
    deposit = credit("alice", "BTC", "1", "pay-1", metadata={"order_id": "o-1", "n": [1, 2.5]})
    too_much = DebitCommand(reference_id="wd-1", transaction_type="withdrawal", user_id="alice",
                            currency="BTC", amount=D("5"))  # fmt: skip
    first = await service.handle_batch([deposit, deposit, too_much])
    assert statuses(first) == ["applied", "duplicate", "rejected"]
    transaction_id = first.results[0][1].transaction_id

    unknown = ("credit", DEPOSIT, "never-sent")
    found = await store.find_outcomes([deposit.idempotency_key, too_much.idempotency_key, unknown])
    assert set(found) == {deposit.idempotency_key, too_much.idempotency_key}
    applied = found[deposit.idempotency_key]
    assert applied.command == deposit  # command_id, issued_at and metadata too
    assert applied.fingerprint == deposit.fingerprint()
    assert (applied.status, applied.transaction_id, applied.recorded_at) == (
        "applied",
        transaction_id,
        T0,
    )
    assert applied.entries == (
        Entry(NOWPAYMENTS, "BTC", D("-1")),
        Entry(user_account("alice", "available"), "BTC", D("1")),
    )
    assert applied.balances_after == (
        BalanceAfter("alice", "BTC", Balances(available=D("1")), version=1),
    )
    rejected = found[too_much.idempotency_key]
    assert (rejected.status, rejected.reason) == ("rejected", "insufficient_funds")
    assert rejected.detail == "available BTC of alice is 1.00000000, 5.00000000 needed"
    assert rejected.entries == ()
    assert rejected.balances_after == (BalanceAfter("alice", "BTC", Balances(available=D("1"))),)

    # A redelivery (new command_id and issued_at, same request) and a conflicting reuse of a key.
    resent = credit("alice", "BTC", "1", "pay-1")
    retried = too_much.model_copy(update={"command_id": "again"})
    conflicting = credit("alice", "BTC", "2", "pay-1")
    second = await service.handle_batch([resent, retried, conflicting])
    assert statuses(second) == ["duplicate", "duplicate", "rejected"]
    assert [r.original_status for _, r in second.results[:2]] == ["applied", "rejected"]
    assert second.results[0][1].transaction_id == transaction_id
    assert second.results[2][1].reason == "idempotency_conflict"
    assert len([o async for o in store.all_outcomes()]) == 2
    assert (await store.wallets_of("alice"))[0].version == 1


# All or nothing --------------------------------------------------------------------------------


def credit_batch(
    wallet: WalletRecord, read_version: int, ref: str, amount: Decimal, transaction_id: str
) -> LedgerBatch:
    """A batch of one credit built by hand, so that a test can make it stale or clashing."""
    command = credit(wallet.user_id, wallet.currency, str(amount), ref)
    now = wallet.last_updated + timedelta(minutes=1)
    after = wallet.balances.moved("available", amount)
    outcome = Outcome(
        key=command.idempotency_key,
        fingerprint=command.fingerprint(),
        command=command,
        status="applied",
        transaction_id=transaction_id,
        recorded_at=now,
        entries=(
            Entry(NOWPAYMENTS, wallet.currency, -amount),
            Entry(user_account(wallet.user_id, "available"), wallet.currency, amount),
        ),
        balances_after=(BalanceAfter(wallet.user_id, wallet.currency, after, read_version + 1),),
    )
    record = replace(wallet, balances=after, version=read_version + 1, last_updated=now)
    return LedgerBatch(
        outcomes=(outcome,),
        wallets=((record, read_version),),
        history=history_rows(outcome),
        account_deltas={(NOWPAYMENTS, wallet.currency): -amount},
    )


async def two_credits(service: LedgerService, store: LedgerStore) -> WalletRecord:
    await service.handle_batch([credit("alice", "BTC", "1", "d1")])
    await service.handle_batch([credit("alice", "BTC", "2", "d2")])
    (wallet,) = await store.wallets_of("alice")
    assert wallet.version == 2
    return wallet


@pytest.mark.parametrize(
    ("read_version", "ref"),
    [
        pytest.param(1, "d3", id="stale-wallet-version"),
        # The wallet version is current: only the idempotency key clashes.
        pytest.param(2, "d1", id="recorded-key"),
    ],
)
async def test_a_refused_commit_writes_nothing(
    store: LedgerStore, service: LedgerService, read_version: int, ref: str
) -> None:
    wallet = await two_credits(service, store)
    before = await snapshot(store)
    with pytest.raises(ConcurrencyConflict):
        await store.commit(credit_batch(wallet, read_version, ref, D("5"), "refused"))
    assert await snapshot(store) == before


async def test_a_clashing_history_row_conflicts_and_writes_nothing(
    store: LedgerStore, service: LedgerService
) -> None:
    wallet = await two_credits(service, store)
    before = await snapshot(store)
    taken = before[2][0][0]  # a transaction_id already in wallet_transactions
    batch = credit_batch(wallet, 2, "d3", D("5"), "fresh")
    clashing = replace(batch, history=(replace(batch.history[0], transaction_id=taken),))
    with pytest.raises(ConcurrencyConflict):
        await store.commit(clashing)
    assert await snapshot(store) == before


async def test_two_batches_creating_one_wallet_one_conflicts(store: LedgerStore) -> None:
    empty = WalletRecord("carol", "USDT", Balances(), 0, T0, T0)
    await store.commit(credit_batch(empty, 0, "first", D("10"), "tx-first"))
    before = await snapshot(store)
    with pytest.raises(ConcurrencyConflict):
        await store.commit(credit_batch(empty, 0, "second", D("20"), "tx-second"))
    assert await snapshot(store) == before
    (wallet,) = await store.wallets_of("carol")
    assert (wallet.balances.available, wallet.version) == (D("10"), 1)


class RacingStore:
    """Holds the first commit of each of two services until both have read: a forced race."""

    def __init__(self, inner: LedgerStore, barrier: asyncio.Barrier) -> None:
        self._inner = inner
        self._barrier: asyncio.Barrier | None = barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(self, batch: LedgerBatch) -> None:
        if self._barrier is not None:
            barrier, self._barrier = self._barrier, None
            async with asyncio.timeout(30):
                await barrier.wait()
        await self._inner.commit(batch)


async def test_racing_consumers_on_a_new_wallet_apply_both_exactly_once(store: LedgerStore) -> None:
    # Both batches read "no wallet" before either commits; the loser must conflict and be decided
    # again. On MongoDB it fails on the unique (user_id, currency) index or with a write conflict.
    barrier = asyncio.Barrier(2)
    racers = [RacingStore(store, barrier) for _ in range(2)]
    first = make_service(racers[0])
    second = LedgerService(racers[1], new_id=lambda: "other-tx", backoff_seconds=0.001)
    reports = await asyncio.gather(
        first.handle_batch([credit("dave", "BTC", "1", "race-1")]),
        second.handle_batch([credit("dave", "BTC", "2", "race-2")]),
    )
    assert [statuses(r) for r in reports] == [["applied"], ["applied"]]
    assert sorted(r.attempts for r in reports) == [1, 2]
    (wallet,) = await store.wallets_of("dave")
    assert (wallet.balances.available, wallet.version) == (D("3"), 2)
    assert await store.account_balances() == {(NOWPAYMENTS, "BTC"): D("-3")}
    assert len([o async for o in store.all_outcomes()]) == 2


# Read side -------------------------------------------------------------------------------------


async def test_history_pages_newest_first_with_a_cursor_and_a_currency_filter(
    store: LedgerStore, service: LedgerService
) -> None:
    a = "alice"
    await service.handle_batch([credit(a, "BTC", "1", "d1"), credit(a, "ETH", "2", "d2")])
    await service.handle_batch(
        [
            DebitCommand(reference_id="w1", transaction_type="withdrawal", user_id=a,
                         currency="BTC", amount=D("0.1")),
            LockCommand(reference_id="l1", transaction_type="p2p_escrow", user_id=a,
                        currency="BTC", amount=D("0.2")),
            credit(a, "ETH", "1", "d3"),
        ]
    )  # fmt: skip
    await service.handle_batch(
        [
            TransferCommand(reference_id="t1", transaction_type="p2p_payment", user_id=a,
                            to_user="bob", currency="BTC", amount=D("0.05")),
            SavingsInCommand(reference_id="s1", transaction_type="savings_deposit", user_id=a,
                             currency="ETH", amount=D("0.5")),
        ]
    )  # fmt: skip

    everything = await store.history_of(a, currency=None, limit=100, before=None)
    assert len(everything) == 7
    order = [(row.timestamp, row.transaction_id) for row in everything]
    assert order == sorted(order, reverse=True)
    assert [(r.direction, r.amount, r.currency) for r in everything] == [
        ("savings_in", D("0.5"), "ETH"),
        ("debit", D("0.05"), "BTC"),
        ("credit", D("1"), "ETH"),
        ("lock", D("0.2"), "BTC"),
        ("debit", D("0.1"), "BTC"),
        ("credit", D("2"), "ETH"),
        ("credit", D("1"), "BTC"),
    ]
    newest = everything[0]
    assert (newest.balance_after, newest.savings_balance_after) == (D("2.5"), D("0.5"))
    lock_row = everything[3]
    assert (lock_row.balance_after, lock_row.locked_balance_after) == (D("0.7"), D("0.2"))
    assert (lock_row.reference_id, lock_row.transaction_type) == ("l1", "p2p_escrow")

    for currency in (None, "BTC", "ETH"):
        expected = [r for r in everything if currency is None or r.currency == currency]
        assert await read_pages(store, a, currency, page=2) == expected

    (bob_row,) = await store.history_of("bob", currency=None, limit=10, before=None)
    assert (bob_row.direction, bob_row.amount, bob_row.balance_after) == (
        "credit",
        D("0.05"),
        D("0.05"),
    )
    oldest = everything[-1]
    last = (oldest.timestamp, oldest.transaction_id)
    assert await store.history_of(a, currency=None, limit=10, before=last) == []
    assert await store.history_of(a, currency="USDT", limit=10, before=None) == []


async def read_pages(
    store: LedgerStore, user: str, currency: str | None, page: int
) -> list[HistoryRow]:
    rows: list[HistoryRow] = []
    cursor: tuple[datetime, str] | None = None
    while True:
        found = await store.history_of(user, currency=currency, limit=page, before=cursor)
        assert len(found) <= page
        rows.extend(found)
        if len(found) < page:
            return rows
        cursor = (found[-1].timestamp, found[-1].transaction_id)


# Ops: iterators and projection swaps -----------------------------------------------------------


async def test_iterators_return_everything_outcomes_in_commit_order(
    store: LedgerStore, service: LedgerService
) -> None:
    users = [f"user{i}" for i in range(5)]
    for round_ in range(3):
        batch: list[WalletCommand] = [credit(u, "BTC", "1", f"d{round_}-{u}") for u in users]
        batch.append(
            DebitCommand(reference_id=f"no-{round_}", transaction_type="withdrawal",
                         user_id="nobody", currency="BTC", amount=D("1"))
        )  # fmt: skip
        await service.handle_batch(batch)

    outcomes = [o async for o in store.all_outcomes()]
    ids = [o.transaction_id for o in outcomes]
    assert ids == [f"tx{n:05d}" for n in range(1, 19)]  # made in decision order
    assert [o.status for o in outcomes].count("rejected") == 3
    wallets = [w async for w in store.all_wallets()]
    assert sorted(w.key for w in wallets) == [(u, "BTC") for u in users]
    assert all(w.balances.available == 3 and w.version == 3 for w in wallets)
    history = [h async for h in store.all_history()]
    assert len(history) == 15
    per_user = [await store.history_of(u, currency=None, limit=10, before=None) for u in users]
    assert sorted(h.transaction_id for h in history) == sorted(
        h.transaction_id for rows in per_user for h in rows
    )


async def test_a_view_at_one_instant_reads_everything_committed_before_it(
    store: LedgerStore, service: LedgerService
) -> None:
    """What verify reads through. Whether a batch committed while the view is open stays out of
    it is the database's (a snapshot session on a replica set; the embedded stand-in reads the
    latest data), so this suite checks what every store does: the view reads it all."""
    await service.handle_batch([credit(u, "BTC", "1", f"view-{u}") for u in ("ann", "ben")])
    await service.handle_batch(
        [
            TransferCommand(reference_id="view-t", transaction_type="p2p_payment",
                            user_id="ann", to_user="ben", currency="BTC", amount=D("0.25")),
        ]
    )  # fmt: skip
    live = await snapshot(store)
    assert len(live[0]) == 3
    async with store.reading_at_one_instant() as view:
        assert await snapshot(view) == live
        assert [o.transaction_id async for o in view.all_outcomes()] == live[0]


async def test_replace_projections_swaps_in_new_read_models(
    store: LedgerStore, service: LedgerService
) -> None:
    await service.handle_batch([credit("alice", "BTC", "1", "d1"), credit("bob", "BTC", "2", "d2")])
    wallets = [w async for w in store.all_wallets()]
    history = [h async for h in store.all_history()]
    alice = next(w for w in wallets if w.user_id == "alice")
    rebuilt = replace(alice, balances=Balances(available=D("0.5"), locked=D("0.5")), version=4)
    accounts = {(NOWPAYMENTS, "BTC"): D("-1"), ("platform:fees", "BTC"): D("0")}

    await store.replace_projections(
        [rebuilt], [h for h in history if h.user_id == "alice"], accounts
    )

    assert await store.wallets_of("alice") == [rebuilt]
    assert await store.wallets_of("bob") == []
    assert await store.history_of("bob", currency=None, limit=10, before=None) == []
    assert len(await store.history_of("alice", currency=None, limit=10, before=None)) == 1
    assert await store.account_balances() == accounts
    assert [w async for w in store.all_wallets()] == [rebuilt]
    assert len([o async for o in store.all_outcomes()]) == 2  # events are never replaced

    # The ledger goes on from the swapped-in state, version guards included.
    report = await service.handle_batch([credit("alice", "BTC", "1", "d3")])
    assert statuses(report) == ["applied"]
    (after,) = await store.wallets_of("alice")
    assert (after.balances, after.version) == (Balances(D("1.5"), D("0.5")), 5)

    await store.replace_projections([], [], {})
    assert [w async for w in store.all_wallets()] == []
    assert [h async for h in store.all_history()] == []
    assert await store.account_balances() == {}


async def test_holds_are_stored_per_reference_and_survive_replay(
    store: LedgerStore, service: LedgerService
) -> None:
    def lock(reference: str, amount: str) -> LockCommand:
        return LockCommand(reference_id=reference, transaction_type="p2p_escrow", user_id="seller",
                           currency="BTC", amount=D(amount))  # fmt: skip

    await service.handle_batch(
        [credit("seller", "BTC", "1", "dep-h"), lock("trade.a$1", "0.3"), lock("trade-b", "0.2")]
    )
    report = await service.handle_batch(
        [
            # Trade b's cancel may not unlock trade a's escrow.
            UnlockCommand(reference_id="trade-b", transaction_type="p2p_cancelled",
                          user_id="seller", currency="BTC", amount=D("0.25")),
            # A step of its own (own reference) spending the named hold trade-b.
                UnlockCommand(reference_id="trade-b-cancel", hold_id="trade-b",
                              transaction_type="p2p_cancelled", user_id="seller", currency="BTC",
                              amount=D("0.2")),
        ]
    )  # fmt: skip
    assert [(r.status, r.reason) for _, r in report.results] == [
        ("rejected", "insufficient_funds"),
        ("applied", None),
    ]
    (wallet,) = await store.wallets_of("seller")
    assert wallet.holds == (("trade.a$1", D("0.3")),)
    assert wallet.balances.locked == D("0.3")
    await replay(store)
    (rebuilt,) = await store.wallets_of("seller")
    assert rebuilt.holds == (("trade.a$1", D("0.3")),)
    assert await verify(store) == []


async def test_replay_names_each_platform_account_it_resets_as_verify_does(
    store: LedgerStore, service: LedgerService
) -> None:
    await service.handle_batch([credit("alice", "BTC", "1.5", "d1")])
    wallets = [w async for w in store.all_wallets()]
    history = [h async for h in store.all_history()]
    # Stored balances no event explains: one changed by hand, one written around the ledger.
    drifted = {(NOWPAYMENTS, "BTC"): D("-2"), ("platform:fees", "BTC"): D("0.0000001")}
    await store.replace_projections(wallets, history, drifted)
    assert [str(d) for d in await verify(store)] == [
        "account external:nowpayments/BTC: balance expected -1.5, found -2",
        "account platform:fees/BTC: balance expected 0, found 0.0000001",
        "currency BTC: sum of all accounts expected 0, found -0.4999999",
    ]

    resets = [
        "account external:nowpayments/BTC: stored -2, rebuilt -1.5",
        "account platform:fees/BTC: stored 0.0000001, rebuilt 0",
    ]
    # They are handed over before anything is replaced: an announcement that fails stops it.
    announced: list[list[str]] = []

    def fails(planned: Replay) -> None:
        announced.append([str(d) for d in planned.account_drift])
        raise RuntimeError("the output is gone")

    with pytest.raises(RuntimeError):
        await replay(store, before_swap=fails)
    assert announced == [resets]
    assert await store.account_balances() == drifted

    replayed = await replay(store)
    assert [str(d) for d in replayed.account_drift] == resets
    assert await store.account_balances() == {(NOWPAYMENTS, "BTC"): D("-1.5")}
    assert await verify(store) == []
    assert (await replay(store)).account_drift == []


# Platform accounts a batch spends: read with the wallets, guarded at commit ----------------------


def funding(currency: str, amount: str, ref: str) -> CreditCommand:
    return CreditCommand(reference_id=ref, transaction_type="liquidity_funding", user_id="admin",
                         currency=currency, amount=amount)  # fmt: skip


def swap(user: str, receive_amount: str, ref: str) -> ExchangeCommand:
    return ExchangeCommand(reference_id=ref, transaction_type="swap", user_id=user,
                           currency="BTC", amount=D("0.1"), receive_currency="ETH",
                           receive_amount=D(receive_amount))  # fmt: skip


async def test_read_balances_returns_wallets_and_platform_accounts_together(
    store: LedgerStore, service: LedgerService
) -> None:
    await service.handle_batch([credit("alice", "BTC", "1", "d1"), funding("ETH", "4", "f1")])
    found = await store.read_balances(
        [("alice", "BTC"), ("nobody", "BTC")],
        [("platform:liquidity", "ETH"), ("platform:liquidity", "SOL")],
    )
    assert set(found.wallets) == {("alice", "BTC")}
    assert found.wallets[("alice", "BTC")].balances == Balances(available=D("1"))
    # An account never stored reads as zero.
    assert found.accounts == {
        ("platform:liquidity", "ETH"): D("4"),
        ("platform:liquidity", "SOL"): 0,
    }
    only_accounts = await store.read_balances([], [("platform:liquidity", "ETH")])
    assert (only_accounts.wallets, only_accounts.accounts) == (
        {},
        {("platform:liquidity", "ETH"): 4},
    )


async def test_a_commit_spending_more_liquidity_than_is_left_is_refused_whole(
    store: LedgerStore, service: LedgerService
) -> None:
    await service.handle_batch([credit("alice", "BTC", "1", "d1"), funding("ETH", "4", "f1")])
    before = await snapshot(store)
    (wallet,) = await store.wallets_of("alice")
    spent = credit_batch(wallet, wallet.version, "d2", D("0.5"), "tx-spend")
    # As a batch that relied on 5 ETH of liquidity (another writer has since spent some).
    greedy = replace(
        spent,
        account_deltas={**spent.account_deltas, ("platform:liquidity", "ETH"): D("-5")},
        account_floors={("platform:liquidity", "ETH"): D("5")},
    )
    with pytest.raises(ConcurrencyConflict):
        await store.commit(greedy)
    assert await snapshot(store) == before
    liquidity = ("platform:liquidity", "ETH")
    exact = replace(
        greedy,
        account_floors={liquidity: D("4")},
        account_deltas={**spent.account_deltas, liquidity: D("-4")},
    )
    await store.commit(exact)
    assert (await store.account_balances())[("platform:liquidity", "ETH")] == 0


class RivalBeforeCommit:
    """The store as one writer sees it: before its first commit, a rival writer runs."""

    def __init__(self, store: LedgerStore, rival: Any) -> None:
        self._store = store
        self._rival = rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, batch: LedgerBatch) -> None:
        if self._rival is not None:
            rival, self._rival = self._rival, None
            await rival()
        await self._store.commit(batch)


async def test_two_writers_cannot_both_spend_the_same_liquidity(
    store: LedgerStore, service: LedgerService
) -> None:
    await service.handle_batch(
        [
            credit("alice", "BTC", "1", "da"),
            credit("bob", "BTC", "1", "db"),
            funding("ETH", "5", "f"),
        ]
    )
    other = make_service(store, "rival")

    async def rival() -> None:
        assert statuses(await other.handle_batch([swap("bob", "4", "s-bob")])) == ["applied"]

    # alice's batch read 5 ETH of liquidity; bob's swap takes 4 before alice's commit. Different
    # wallets, so only the guard on the platform account can catch it: decided again, refused.
    racing = make_service(RivalBeforeCommit(store, rival), "racing")  # type: ignore[arg-type]
    report = await racing.handle_batch([swap("alice", "3", "s-alice")])
    assert [(r.status, r.reason) for _, r in report.results] == [
        ("rejected", "insufficient_liquidity")
    ]
    assert report.attempts == 2
    assert (await store.account_balances())[("platform:liquidity", "ETH")] == 1
    assert await verify(store) == []


# Order without clocks --------------------------------------------------------------------------


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


async def test_verify_and_replay_follow_commit_order_when_clocks_disagree(
    store: LedgerStore,
) -> None:
    ids = itertools.count(1)
    ahead = LedgerService(store, clock=FixedClock(T0 + timedelta(hours=1)),
                          new_id=lambda: f"a{next(ids):05d}")  # fmt: skip
    behind = LedgerService(store, clock=FixedClock(T0), new_id=lambda: f"b{next(ids):05d}")
    # Committed in this order; recorded_at says the opposite (the second process is an hour behind).
    await ahead.handle_batch([credit("alice", "BTC", "1", "d1")])
    await behind.handle_batch(
        [
            LockCommand(reference_id="t1", transaction_type="p2p_escrow", user_id="alice",
                        currency="BTC", amount=D("0.6")),
            TransferLockedCommand(reference_id="t1", transaction_type="p2p_completed",
                                  user_id="alice", to_user="bob", currency="BTC", amount=D("0.6")),
        ]
    )  # fmt: skip
    await ahead.handle_batch([DebitCommand(reference_id="w1", transaction_type="withdrawal",
                                           user_id="alice", currency="BTC", amount=D("0.4"))])  # fmt: skip
    await behind.handle_batch([DebitCommand(reference_id="w2", transaction_type="withdrawal",
                                            user_id="bob", currency="BTC", amount=D("0.6"))])  # fmt: skip
    assert await verify(store) == []
    projections = (await replay(store)).projections
    assert {(w.key, w.version) for w in projections.wallets} == {
        (("alice", "BTC"), 4),
        (("bob", "BTC"), 2),
    }
    assert await verify(store) == []
    assert await balances(store, "alice") == {"BTC": Balances()}


async def test_a_ledger_that_never_held_legacy_wallets_has_no_copies_of_them(
    store: LedgerStore, service: LedgerService
) -> None:
    await service.handle_batch([credit("alice", "BTC", "1", "d1")])
    assert await store.legacy_wallets() == []
    assert await store.replaced_legacy_wallets() == []
    assert await verify(store) == []


# Idempotency across versions: recorded outcomes of earlier fingerprint formats ------------------

RECORDED = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "recorded_commands.json").read_text()
)


@pytest.mark.parametrize("case", RECORDED["cases"], ids=lambda case: case["name"])
async def test_a_resend_matches_an_outcome_stored_by_an_earlier_version(
    store: LedgerStore, service: LedgerService, case: dict[str, Any]
) -> None:
    command = parse_command(json.dumps(case["stored_command"]))
    stored = Outcome(
        key=command.idempotency_key,
        fingerprint=case["stored_fingerprint"],
        command=command,
        status="rejected",
        transaction_id="recorded-1",
        recorded_at=T0,
        reason="insufficient_funds",
        detail="recorded before the upgrade",
    )
    await store.commit(LedgerBatch(outcomes=(stored,), wallets=(), history=()))
    resend = parse_command(json.dumps(case["resend"]))
    (_, result), = (await service.handle_batch([resend])).results  # fmt: skip
    if case["expected"] == "duplicate":
        assert (result.status, result.original_status, result.reason) == (
            "duplicate",
            "rejected",
            "insufficient_funds",
        )
    else:
        assert (result.status, result.reason) == ("rejected", case["expected"])
