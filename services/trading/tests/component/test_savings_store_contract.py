"""The savings storage contract, run against the in-memory stores and against MongoDB: a transfer
is inserted once per id and settled once, and the pending ones are found by when they were made;
a history row is the ledger event's whatever a result wrote before, and a result's only where
nothing is; balances and positions are exact sums; an interest record is claimed once per
reference and settled once, a day's records are found by currency and day, and a completed run is
noted once per currency and day; instants and amounts come back as MongoDB keeps them, in copies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, Inexact
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from shared.messaging import LedgerTransaction, Posting
from trading.savings.adapters.memory import MemoryAccruals, MemorySavingsHistory, MemoryTransfers
from trading.savings.adapters.mongo import (
    MongoAccruals,
    MongoSavingsHistory,
    MongoTransfers,
    ensure_indexes,
)
from trading.savings.application.ports import (
    AccrualRecord,
    Accruals,
    SavingsHistory,
    TransferRecord,
    Transfers,
)
from trading.savings.domain.accrual import (
    INTEREST_TRANSACTION_TYPE,
    AccrualDue,
    SavingsMovement,
    accrual_reference,
)
from trading.savings.domain.transfers import TransferStatus
from trading.testing import FakeClock

type Database = AsyncDatabase[dict[str, Any]]

D = Decimal
T0 = FakeClock().now  # whole seconds: what both stores keep as it is
MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)
DAY = date(2026, 11, 29)
COMPLETED, FAILED = TransferStatus.COMPLETED, TransferStatus.FAILED


@dataclass
class Stores:
    transfers: Transfers
    history: SavingsHistory
    accruals: Accruals


@pytest_asyncio.fixture
async def stores(store_database: Database | None) -> Stores:
    if store_database is None:
        return Stores(MemoryTransfers(), MemorySavingsHistory(), MemoryAccruals())
    await ensure_indexes(store_database)
    return Stores(
        MongoTransfers(store_database),
        MongoSavingsHistory(store_database),
        MongoAccruals(store_database),
    )


def _transfer(transfer_id: str = "t1", **changes: Any) -> TransferRecord:
    created = changes.pop("created_at", T0)
    return {
        "transfer_id": transfer_id,
        "user_id": "amy",
        "currency": "USDT",
        "amount": D("100"),
        "direction": "to_savings",
        "status": "pending",
        "reason": None,
        "transaction_id": None,
        "created_at": created,
        "updated_at": created,
    } | changes


def _ids(transfers: list[TransferRecord]) -> set[str]:
    return {t["transfer_id"] for t in transfers}


def _movement(tx: str, amount: str, at: datetime = T0, **changes: Any) -> SavingsMovement:
    movement = SavingsMovement(
        transaction_id=tx,
        transaction_type="savings_deposit",
        user_id="amy",
        currency="USDT",
        amount=D(amount),
        occurred_at=at,
    )
    return replace(movement, **changes)


def _due(user_id: str = "amy", **changes: Any) -> AccrualDue:
    due = AccrualDue(
        reference_id=accrual_reference("USDT", DAY, user_id),
        user_id=user_id,
        currency="USDT",
        day=DAY,
        balance=D("1000"),
        apr=D("0.05"),
        amount=D("0.136986"),
    )
    return replace(due, **changes)


# Transfers


async def test_a_transfer_is_read_back_as_it_was_inserted(stores: Stores) -> None:
    transfer = _transfer(amount=D("100.10"))
    assert await stores.transfers.insert(transfer)
    read = await stores.transfers.get("t1")
    assert read == transfer
    assert read is not None
    assert str(read["amount"]) == "100.10"  # decimal128 keeps the exponent too
    assert await stores.transfers.get("t2") is None


async def test_a_transfers_instants_are_kept_in_utc_to_the_millisecond(stores: Stores) -> None:
    at = datetime(2026, 11, 30, 14, 0, 0, 123987, tzinfo=timezone(timedelta(hours=2)))
    await stores.transfers.insert(_transfer(created_at=at))
    read = await stores.transfers.get("t1")
    assert read is not None
    kept = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)
    assert (read["created_at"], read["updated_at"]) == (kept, kept)
    assert read["created_at"].utcoffset() == timedelta(0)


async def test_a_transfer_id_is_inserted_once(stores: Stores) -> None:
    first = _transfer()
    assert await stores.transfers.insert(first)
    assert not await stores.transfers.insert(_transfer(user_id="eve", amount=D("5")))
    assert await stores.transfers.get("t1") == first


async def test_racing_inserts_of_one_transfer_id_store_it_once(stores: Stores) -> None:
    tries = [_transfer(amount=D(n)) for n in range(1, 6)]
    inserted = await asyncio.gather(*(stores.transfers.insert(t) for t in tries))
    assert inserted.count(True) == 1
    assert await stores.transfers.get("t1") == tries[inserted.index(True)]


async def test_a_transfer_amount_is_kept_exact_to_34_digits(stores: Stores) -> None:
    exact = _transfer("exact", amount=D("1234567890.123456789012345678901234"))
    await stores.transfers.insert(exact)
    assert await stores.transfers.get("exact") == exact
    with pytest.raises(Inexact):
        await stores.transfers.insert(
            _transfer("long", amount=D("1.0000000000000000000000000000000001"))
        )
    assert await stores.transfers.get("long") is None


async def test_a_transfer_is_settled_once(stores: Stores) -> None:
    transfers = stores.transfers
    await transfers.insert(_transfer())
    at = T0 + timedelta(seconds=2, microseconds=345678)
    settled = await transfers.settle(
        "t1", FAILED, reason="insufficient_funds", transaction_id=None, at=at
    )
    expected = _transfer(
        status="failed",
        reason="insufficient_funds",
        updated_at=T0 + timedelta(seconds=2, milliseconds=345),
    )
    assert settled == expected  # as now stored
    assert await transfers.get("t1") == expected
    again = await transfers.settle("t1", COMPLETED, reason=None, transaction_id="tx-1", at=at)
    assert again is None
    assert await transfers.get("t1") == expected
    assert (
        await transfers.settle("t-unknown", COMPLETED, reason=None, transaction_id="tx", at=at)
        is None
    )
    assert await transfers.get("t-unknown") is None


async def test_a_completed_transfer_keeps_its_transaction(stores: Stores) -> None:
    await stores.transfers.insert(_transfer())
    settled = await stores.transfers.settle(
        "t1", COMPLETED, reason=None, transaction_id="tx-1", at=T0
    )
    assert settled == _transfer(status="completed", transaction_id="tx-1")
    assert await stores.transfers.get("t1") == settled


async def test_racing_results_settle_a_transfer_once(stores: Stores) -> None:
    await stores.transfers.insert(_transfer())
    outcomes = [(COMPLETED, None, "tx-1"), (FAILED, "rejected", None)] * 3
    settled = await asyncio.gather(
        *(
            stores.transfers.settle("t1", s, reason=r, transaction_id=tx, at=T0)
            for s, r, tx in outcomes
        )
    )
    [winner] = [s for s in settled if s is not None]
    status, reason, tx = outcomes[settled.index(winner)]
    assert winner == _transfer(status=status.value, reason=reason, transaction_id=tx)
    assert await stores.transfers.get("t1") == winner


async def test_pending_transfers_are_found_by_when_they_were_made(stores: Stores) -> None:
    transfers = stores.transfers
    await transfers.insert(_transfer("early"))
    await transfers.insert(_transfer("late", created_at=T0 + timedelta(seconds=5)))
    await transfers.insert(_transfer("settled"))
    await transfers.settle("settled", COMPLETED, reason=None, transaction_id="tx", at=T0)
    assert _ids(await transfers.pending_before(T0 + timedelta(seconds=5))) == {"early"}
    assert _ids(await transfers.pending_before(T0 + timedelta(seconds=6))) == {"early", "late"}
    assert await transfers.pending_before(T0) == []
    # Made within the millisecond of the cutoff: not before it.
    await transfers.insert(_transfer("sub-ms", created_at=T0 + timedelta(seconds=9) + 200 * US))
    assert _ids(await transfers.pending_before(T0 + timedelta(seconds=9) + 900 * US)) == {
        "early",
        "late",
    }
    assert "sub-ms" in _ids(await transfers.pending_before(T0 + timedelta(seconds=9) + MS))
    [early] = await transfers.pending_before(T0 + MS)
    assert early == _transfer("early")


async def test_a_pending_transfer_sent_again_is_found_once_that_was_before_the_cutoff(
    stores: Stores,
) -> None:
    transfers = stores.transfers
    await transfers.insert(_transfer("asked"))
    await transfers.insert(_transfer("settled"))
    asked_at = T0 + timedelta(seconds=30)
    await transfers.mark_asked("asked", asked_at)
    await transfers.settle("settled", COMPLETED, reason=None, transaction_id="tx", at=T0)
    await transfers.mark_asked("settled", asked_at)  # settled: untouched
    assert await transfers.pending_before(asked_at) == []
    [found] = await transfers.pending_before(asked_at + MS)
    assert (found["transfer_id"], found["asked_at"], found["updated_at"]) == ("asked", asked_at, T0)
    settled = await transfers.get("settled")
    assert settled is not None
    assert "asked_at" not in settled
    await transfers.mark_asked("missing", asked_at)  # nothing to mark
    assert await transfers.get("missing") is None


async def test_pending_transfers_come_oldest_first_and_a_page_goes_on_after_another(
    stores: Stores,
) -> None:
    transfers = stores.transfers
    for transfer_id, at in (("b", 2 * MS), ("c", MS), ("a", MS), ("d", 0 * MS), ("e", 3 * MS)):
        await transfers.insert(_transfer(transfer_id, created_at=T0 + at))
    later = T0 + timedelta(seconds=1)
    # By when each was made, then by id (two made within one millisecond).
    assert [t["transfer_id"] for t in await transfers.pending_before(later)] == list("dacbe")
    first = await transfers.pending_before(later, limit=2)
    assert [t["transfer_id"] for t in first] == ["d", "a"]
    after = (first[-1]["created_at"], first[-1]["transfer_id"])
    second = await transfers.pending_before(later, limit=2, after=after)
    assert [t["transfer_id"] for t in second] == ["c", "b"]
    after = (second[-1]["created_at"], second[-1]["transfer_id"])
    assert [t["transfer_id"] for t in await transfers.pending_before(later, after=after)] == ["e"]


async def test_at_most_limit_pending_transfers_are_found(stores: Stores) -> None:
    for n in range(5):
        await stores.transfers.insert(_transfer(f"t{n}"))
    later = T0 + timedelta(seconds=1)
    everyone = {f"t{n}" for n in range(5)}
    assert _ids(await stores.transfers.pending_before(later)) == everyone
    for limit in (2, -2):
        two = await stores.transfers.pending_before(later, limit=limit)
        assert len(two) == 2
        assert _ids(two) <= everyone
    assert _ids(await stores.transfers.pending_before(later, limit=0)) == everyone


async def test_at_most_100_pending_transfers_are_found_by_default(stores: Stores) -> None:
    for n in range(101):
        await stores.transfers.insert(_transfer(f"t{n:03}"))
    assert len(await stores.transfers.pending_before(T0 + timedelta(seconds=1))) == 100


async def test_transfers_handed_out_are_copies(stores: Stores) -> None:
    transfers = stores.transfers
    given = _transfer()
    await transfers.insert(given)
    given["status"] = "completed"
    read = await transfers.get("t1")
    [pending] = await transfers.pending_before(T0 + MS)
    assert read is not None
    for record in (read, pending):
        record["status"] = "completed"
        record["amount"] = D("1000")
        record["user_id"] = "mallory"
    assert await transfers.get("t1") == _transfer()
    settled = await transfers.settle("t1", COMPLETED, reason=None, transaction_id="tx", at=T0)
    assert settled is not None
    settled["amount"] = D("1000")
    stored = await transfers.get("t1")
    assert stored is not None
    assert stored["amount"] == D("100")


# The savings history


async def test_an_event_overwrites_what_a_result_recorded_and_a_result_overwrites_nothing(
    stores: Stores,
) -> None:
    history = stores.history
    cutoff = T0 + timedelta(seconds=10)
    # The result first (the wallet's answer to our command), then the ledger's event.
    await history.record_result(_movement("tx-1", "100", T0 + timedelta(seconds=20)))
    assert await history.balances("USDT", cutoff) == {}
    await history.record_event(_movement("tx-1", "100", T0))
    assert await history.balances("USDT", cutoff) == {"amy": D("100")}
    # The event first: a later result changes nothing, nor does a second result.
    await history.record_event(_movement("tx-2", "50", T0))
    await history.record_result(_movement("tx-2", "70", T0 + timedelta(seconds=20)))
    assert await history.balances("USDT", cutoff) == {"amy": D("150")}
    await history.record_result(_movement("tx-3", "1", T0))
    await history.record_result(_movement("tx-3", "2", T0))
    assert await history.balances("USDT", cutoff) == {"amy": D("151")}
    # A redelivered event is written again, over itself.
    await history.record_event(_movement("tx-1", "100", T0 + timedelta(seconds=1)))
    assert await history.positions("amy") == [("USDT", D("151"), D(0))]


async def test_rows_are_kept_per_transaction_user_and_currency(stores: Stores) -> None:
    history = stores.history
    await history.record_event(_movement("tx-1", "100"))
    await history.record_event(_movement("tx-1", "30", user_id="bob"))
    await history.record_event(_movement("tx-1", "2", currency="ETH"))
    cutoff = T0 + MS
    assert await history.balances("USDT", cutoff) == {"amy": D("100"), "bob": D("30")}
    assert await history.balances("ETH", cutoff) == {"amy": D("2")}


async def test_racing_event_and_result_of_a_new_row_leave_the_events(stores: Stores) -> None:
    history = stores.history
    await asyncio.gather(
        history.record_result(_movement("tx-1", "70", T0 + timedelta(seconds=20))),
        history.record_event(_movement("tx-1", "100", T0)),
        history.record_result(_movement("tx-1", "80", T0 + timedelta(seconds=20))),
    )
    assert await history.balances("USDT", T0 + MS) == {"amy": D("100")}


async def test_a_ledger_transaction_records_its_savings_movements(stores: Stores) -> None:
    transaction = LedgerTransaction(
        transaction_id="tx-9",
        command_id="c-9",
        type="savings_in",
        transaction_type="savings_deposit",
        reference_id="savings:t9",
        user_id="amy",
        postings=[
            Posting(account="user:amy:available", currency="USDT", amount=D("-100.5")),
            Posting(account="user:amy:savings", currency="USDT", amount=D("100")),
            Posting(account="user:amy:savings", currency="USDT", amount=D("0.5")),
            Posting(account="user:bob:savings", currency="USDT", amount=D("-7")),
            Posting(account="user:bob:available", currency="USDT", amount=D("7")),
            Posting(account="user:cat:savings", currency="USDT", amount=D("0")),
        ],
        occurred_at=T0,
    )
    await stores.history.record_transaction(transaction)
    await stores.history.record_transaction(transaction)  # redelivered
    assert await stores.history.balances("USDT", T0 + MS) == {
        "amy": D("100.5"),
        "bob": D("-7"),
    }
    assert await stores.history.positions("cat") == []


async def test_balances_count_what_occurred_strictly_before_the_cutoff(stores: Stores) -> None:
    history = stores.history
    await history.record_event(_movement("tx-1", "100", T0))
    await history.record_event(_movement("tx-2", "-100", T0 + timedelta(seconds=1)))
    await history.record_event(_movement("tx-3", "5", T0 + timedelta(seconds=2) + 200 * US))
    await history.record_event(_movement("tx-4", "9", T0, currency="ETH"))
    assert await history.balances("USDT", T0) == {}
    assert await history.balances("USDT", T0 + MS) == {"amy": D("100")}
    # A user whose rows sum to zero still has a balance.
    assert await history.balances("USDT", T0 + timedelta(seconds=2)) == {"amy": D("0")}
    # Within the millisecond of the cutoff: not before it.
    assert await history.balances("USDT", T0 + timedelta(seconds=2) + 900 * US) == {"amy": D(0)}
    assert await history.balances("USDT", T0 + timedelta(seconds=2) + MS) == {"amy": D("5")}
    assert await history.balances("BTC", T0 + timedelta(days=1)) == {}


async def test_balances_and_positions_are_exact_sums(stores: Stores) -> None:
    history = stores.history
    await history.record_event(_movement("tx-1", "1234567890.123456789012345678901234"))
    await history.record_event(_movement("tx-2", "0.000000000000000000000000000000001"))
    await history.record_event(
        _movement(
            "tx-3",
            "0.000000000000000000000000000000001",
            transaction_type=INTEREST_TRANSACTION_TYPE,
        )
    )
    total = D("1234567890.123456789012345678901234000000002")  # exact, past 34 digits
    assert await history.balances("USDT", T0 + MS) == {"amy": total}
    assert await history.positions("amy") == [
        ("USDT", total, D("0.000000000000000000000000000000001"))
    ]
    with pytest.raises(Inexact):
        await history.record_event(_movement("tx-4", "1.0000000000000000000000000000000001"))
    assert await history.balances("USDT", T0 + MS) == {"amy": total}


async def test_positions_are_per_currency_sorted_with_the_interest_earned(stores: Stores) -> None:
    history = stores.history
    interest = INTEREST_TRANSACTION_TYPE
    await history.record_event(_movement("tx-1", "100"))
    await history.record_event(_movement("tx-2", "0.5", transaction_type=interest))
    await history.record_result(_movement("tx-3", "0.25", transaction_type=interest))
    await history.record_event(_movement("tx-4", "-40", transaction_type="savings_withdrawal"))
    await history.record_event(_movement("tx-5", "2", currency="BTC"))
    await history.record_event(_movement("tx-6", "1", currency="ETH", user_id="bob"))
    await history.record_event(_movement("tx-7", "3", currency="ETH", transaction_type=interest))
    assert await history.positions("amy") == [
        ("BTC", D("2"), D("0")),
        ("ETH", D("3"), D("3")),
        ("USDT", D("60.75"), D("0.75")),
    ]
    assert await history.positions("bob") == [("ETH", D("1"), D("0"))]
    assert await history.positions("nobody") == []


# Interest records


async def test_an_interest_record_is_claimed_once_per_reference(stores: Stores) -> None:
    accruals = stores.accruals
    due = _due()
    expected: AccrualRecord = {
        "reference_id": "interest:USDT:2026-11-29:amy",
        "user_id": "amy",
        "currency": "USDT",
        "date": "2026-11-29",
        "balance": D("1000"),
        "apr": D("0.05"),
        "amount": D("0.136986"),
        "status": "pending",
        "reason": None,
        "created_at": T0,
        "updated_at": T0,
    }
    assert await accruals.claim(due, T0) == expected
    assert await accruals.get(due.reference_id) == expected
    # Claimed again (a rerun, maybe on other balances): the first record, whatever `due` says.
    other = replace(due, balance=D("2000"), amount=D("0.273972"), apr=D("0.1"))
    assert await accruals.claim(other, T0 + timedelta(seconds=5)) == expected
    assert await accruals.get("interest:USDT:2026-11-29:bob") is None


async def test_a_new_claim_answers_what_it_was_given_and_a_read_what_is_kept(
    stores: Stores,
) -> None:
    at = datetime(2026, 11, 30, 13, 0, 0, 456789, tzinfo=timezone(timedelta(hours=1)))
    claimed = await stores.accruals.claim(_due(apr=D("0.050")), at)
    assert (claimed["created_at"], claimed["updated_at"]) == (at, at)
    read = await stores.accruals.get(_due().reference_id)
    assert read is not None
    kept = datetime(2026, 11, 30, 12, 0, 0, 456000, tzinfo=UTC)
    assert (read["created_at"], read["updated_at"]) == (kept, kept)
    assert read["created_at"].utcoffset() == timedelta(0)
    assert str(read["apr"]) == str(claimed["apr"]) == "0.050"
    assert await stores.accruals.claim(_due(), T0) == read


async def test_interest_amounts_are_kept_exact_to_34_digits(stores: Stores) -> None:
    exact = _due(balance=D("1234567890.123456789012345678901234"), amount=D("1E-18"))
    await stores.accruals.claim(exact, T0)
    read = await stores.accruals.get(exact.reference_id)
    assert read is not None
    assert (read["balance"], read["amount"]) == (exact.balance, exact.amount)
    too_long = _due("bob", amount=D("1.0000000000000000000000000000000001"))
    with pytest.raises(Inexact):
        await stores.accruals.claim(too_long, T0)
    assert await stores.accruals.get(too_long.reference_id) is None


async def test_racing_claims_of_one_reference_decide_its_amount_once(stores: Stores) -> None:
    dues = [_due(amount=D(f"0.{n}")) for n in range(1, 6)]
    records = await asyncio.gather(*(stores.accruals.claim(d, T0) for d in dues))
    stored = await stores.accruals.get(dues[0].reference_id)
    assert stored is not None
    assert records == [stored] * 5
    assert stored["amount"] in {d.amount for d in dues}


async def test_an_interest_record_is_settled_once(stores: Stores) -> None:
    accruals = stores.accruals
    await accruals.claim(_due(), T0)
    later = T0 + timedelta(seconds=3, microseconds=999)
    await accruals.settle(_due().reference_id, "failed", "rejected", later)
    await accruals.settle(_due().reference_id, "paid", None, later + timedelta(seconds=1))
    record = await accruals.get(_due().reference_id)
    assert record is not None
    assert (record["status"], record["reason"], record["created_at"], record["updated_at"]) == (
        "failed",
        "rejected",
        T0,
        T0 + timedelta(seconds=3),
    )
    await accruals.settle("interest:USDT:2026-11-29:nobody", "paid", None, later)
    assert await accruals.get("interest:USDT:2026-11-29:nobody") is None


async def test_an_interest_record_failed_without_an_outcome_is_settled_again(
    stores: Stores,
) -> None:
    """`processing_failed`: the wallet recorded no outcome, so the payment may still apply; a
    later answer settles it (before, it stayed failed while the wallet paid it)."""
    accruals = stores.accruals
    await accruals.claim(_due(), T0)
    reference = _due().reference_id
    await accruals.settle(reference, "failed", "processing_failed", T0 + MS)
    await accruals.settle(reference, "failed", "processing_failed", T0 + 2 * MS)  # again
    await accruals.settle(reference, "paid", None, T0 + 3 * MS)
    await accruals.settle(reference, "failed", "processing_failed", T0 + 4 * MS)  # paid: kept
    record = await accruals.get(reference)
    assert record is not None
    assert (record["status"], record["reason"], record["updated_at"]) == ("paid", None, T0 + 3 * MS)


async def test_racing_results_settle_an_interest_record_once(stores: Stores) -> None:
    await stores.accruals.claim(_due(), T0)
    reference = _due().reference_id
    await asyncio.gather(
        *(
            stores.accruals.settle(reference, s, r, T0 + n * MS)
            for n, (s, r) in enumerate([("paid", None), ("failed", "rejected")] * 3)
        )
    )
    record = await stores.accruals.get(reference)
    assert record is not None
    assert (record["status"], record["reason"], record["updated_at"]) in {
        ("paid", None, T0),
        ("failed", "rejected", T0 + MS),
    }


async def test_interest_records_handed_out_are_copies(stores: Stores) -> None:
    accruals = stores.accruals
    claimed = await accruals.claim(_due(), T0)
    read = await accruals.get(_due().reference_id)
    assert read is not None
    for record in (claimed, read):
        record["status"] = "paid"
        record["amount"] = D("1000")
    again = await accruals.claim(_due(), T0)
    assert (again["status"], again["amount"]) == ("pending", D("0.136986"))
    assert await accruals.get(_due().reference_id) == again


async def test_a_days_interest_records_are_found_by_currency_and_day(stores: Stores) -> None:
    accruals = stores.accruals
    for due in (
        _due("bob"),
        _due("amy"),
        _due("amy", currency="BTC", reference_id=accrual_reference("BTC", DAY, "amy")),
        _due("cy", day=DAY + timedelta(days=1)),
    ):
        await accruals.claim(due, T0)
    await accruals.settle(_due("bob").reference_id, "paid", None, T0 + MS)
    found = await accruals.of_day("USDT", DAY)
    assert [(r["reference_id"], r["status"]) for r in found] == [
        ("interest:USDT:2026-11-29:amy", "pending"),
        ("interest:USDT:2026-11-29:bob", "paid"),
    ]
    assert found[0] == await accruals.get(_due("amy").reference_id)
    found[0]["amount"] = D("1000")  # a copy
    assert (await accruals.of_day("USDT", DAY))[0]["amount"] == D("0.136986")
    assert await accruals.of_day("USDT", DAY - timedelta(days=1)) == []


async def test_a_completed_run_is_noted_per_currency_and_day(stores: Stores) -> None:
    accruals = stores.accruals
    assert not await accruals.run_completed("USDT", DAY)
    await accruals.complete_run("USDT", DAY, T0)
    await asyncio.gather(*(accruals.complete_run("USDT", DAY, T0 + n * MS) for n in range(3)))
    assert await accruals.run_completed("USDT", DAY)
    assert not await accruals.run_completed("BTC", DAY)
    assert not await accruals.run_completed("USDT", DAY + timedelta(days=1))
    # A run that claimed nothing (no saver owed anything) completes its day too.
    await accruals.complete_run("ETH", DAY, T0)
    assert await accruals.run_completed("ETH", DAY)
    assert await accruals.of_day("ETH", DAY) == []


async def test_a_currencys_newest_completed_run_is_found(stores: Stores) -> None:
    accruals = stores.accruals
    assert await accruals.newest_completed("USDT") is None
    # Noted out of order, across a year and a month end, beside another currency's later runs.
    for day in [DAY, DAY - timedelta(days=400), DAY + timedelta(days=3), DAY + timedelta(days=1)]:
        await accruals.complete_run("USDT", day, T0)
    await accruals.complete_run("ETH", DAY + timedelta(days=30), T0)
    assert await accruals.newest_completed("USDT") == DAY + timedelta(days=3)
    assert await accruals.newest_completed("ETH") == DAY + timedelta(days=30)
    assert await accruals.newest_completed("BTC") is None
