"""The referral storage contract, run against the in-memory stores and against MongoDB: a binding
is stored once per invitee and gets its `bound_at` from its first reader, once; a commission is
claimed once per reference and settled once; the commissions still waiting on the wallet are
found by when they were last sent; instants and amounts come back as MongoDB keeps them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, Inexact
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.testing.fixtures import unique_database_name
from trading.referrals.adapters.memory import MemoryBindings, MemoryCommissions
from trading.referrals.adapters.mongo import MongoBindings, MongoCommissions, ensure_indexes
from trading.referrals.application.ports import Bindings, CommissionRecord, Commissions
from trading.referrals.domain.bindings import Binding
from trading.referrals.domain.commissions import CommissionDue, commission_reference
from trading.testing import FakeClock

type Database = AsyncDatabase[dict[str, Any]]

D = Decimal
T0 = FakeClock().now  # whole seconds: what both stores keep as it is
MS = timedelta(milliseconds=1)


@dataclass
class Clock(FakeClock):
    """A fake clock that, once given a `tick`, moves on by it after every reading."""

    tick: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.tick
        return now


@dataclass
class Stores:
    bindings: Bindings
    commissions: Commissions
    clock: Clock


@pytest_asyncio.fixture
async def stores(store_database: Database | None) -> Stores:
    clock = Clock()
    if store_database is None:
        return Stores(MemoryBindings(clock), MemoryCommissions(), clock)
    await ensure_indexes(store_database)
    return Stores(MongoBindings(store_database, clock), MongoCommissions(store_database), clock)


def _due(source_transaction_id: str, at: datetime = T0, **changes: Any) -> CommissionDue:
    due = CommissionDue(
        reference_id=commission_reference(source_transaction_id, "BTC"),
        referrer_id="rob",
        referred_user_id="lia",
        currency="BTC",
        amount=D("0.000002"),
        fee=D("0.00001"),
        rate=D("0.2"),
        source_transaction_id=source_transaction_id,
        source_transaction_type="swap",
        source_occurred_at=at,
    )
    return replace(due, **changes)


def _references(records: list[CommissionRecord]) -> set[str]:
    return {r["reference_id"] for r in records}


# Bindings


async def test_a_binding_is_stamped_by_its_first_reader_once(stores: Stores) -> None:
    bindings, clock = stores.bindings, stores.clock
    assert await bindings.insert("ivy", "rex") is None
    clock.advance(1)  # not stamped by its insert: by the reader below
    assert await bindings.of_many(["ivy", "nobody"]) == {"ivy": Binding("ivy", "rex", clock.now)}
    stamped_at = clock.now
    clock.advance(1)
    assert await bindings.of("ivy") == Binding("ivy", "rex", stamped_at)
    assert await bindings.of_many(["ivy"]) == {"ivy": Binding("ivy", "rex", stamped_at)}
    assert await bindings.insert("ivy", "ron") == Binding("ivy", "rex", stamped_at)
    assert await bindings.of("ivy") == Binding("ivy", "rex", stamped_at)  # not rebound


async def test_the_first_reader_may_be_the_refused_second_insert(stores: Stores) -> None:
    bindings, clock = stores.bindings, stores.clock
    await bindings.insert("ada", "rex")
    clock.advance(1)
    assert await bindings.insert("ada", "ron") == Binding("ada", "rex", clock.now)
    stamped_at = clock.now
    clock.advance(1)
    assert await bindings.of("ada") == Binding("ada", "rex", stamped_at)


async def test_each_invitee_is_stamped_by_its_own_first_reader(stores: Stores) -> None:
    bindings, clock = stores.bindings, stores.clock
    await bindings.insert("ann", "rex")
    await bindings.insert("bob", "rex")
    first = await bindings.of("ann")
    clock.advance(1)
    assert await bindings.of_many(iter(["bob", "ann", "bob"])) == {
        "ann": first,
        "bob": Binding("bob", "rex", clock.now),
    }
    assert first == Binding("ann", "rex", T0)


async def test_unknown_invitees_have_no_binding(stores: Stores) -> None:
    assert await stores.bindings.of("nobody") is None
    assert await stores.bindings.of_many([]) == {}
    assert await stores.bindings.of_many(["nobody", "no-one"]) == {}
    assert await stores.bindings.insert("nobody", "rex") is None  # reading never stored it


async def test_two_racing_inserts_bind_once(stores: Stores) -> None:
    outcomes = await asyncio.gather(
        stores.bindings.insert("una", "rik"), stores.bindings.insert("una", "ron")
    )
    assert outcomes.count(None) == 1
    [refused] = [o for o in outcomes if o is not None]
    assert await stores.bindings.of("una") == refused
    assert refused.referrer_id in {"rik", "ron"}
    counts = [await stores.bindings.invitees_of(r) for r in ("rik", "ron")]
    assert sorted(counts) == [0, 1]


async def test_racing_readers_stamp_a_binding_once(stores: Stores) -> None:
    """Every reader reads the clock (one millisecond later each time); the first stamp stays and
    every reader answers it."""
    stores.clock.tick = MS
    await stores.bindings.insert("una", "rik")

    async def read_many() -> Binding | None:
        return (await stores.bindings.of_many(["una"])).get("una")

    read = await asyncio.gather(
        *(stores.bindings.of("una") for _ in range(4)), *(read_many() for _ in range(4))
    )
    assert read[0] is not None
    assert read == [read[0]] * 8
    assert await stores.bindings.of("una") == read[0]
    assert T0 <= read[0].bound_at < stores.clock.now


async def test_invitees_are_counted_stamped_or_not(stores: Stores) -> None:
    for invitee, referrer in (("a", "rex"), ("b", "rex"), ("c", "ron"), ("rex", "ron")):
        await stores.bindings.insert(invitee, referrer)
    await stores.bindings.of("a")
    assert [await stores.bindings.invitees_of(r) for r in ("rex", "ron", "a", "x")] == [2, 2, 0, 0]


async def test_bound_at_is_kept_in_utc_to_the_millisecond(stores: Stores) -> None:
    stores.clock.now = datetime(2026, 11, 30, 14, 0, 0, 123987, tzinfo=timezone(timedelta(hours=2)))
    await stores.bindings.insert("ivy", "rex")
    binding = await stores.bindings.of("ivy")
    assert binding is not None
    assert binding.bound_at == datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)
    assert binding.bound_at.utcoffset() == timedelta(0)
    assert await stores.bindings.of("ivy") == binding


# Commissions


async def test_a_commission_is_claimed_once_per_reference(stores: Stores) -> None:
    commissions = stores.commissions
    due = _due("tx-1")
    first = await commissions.claim(due, T0)
    expected = {
        "reference_id": "referral:tx-1:BTC",
        "referrer_id": "rob",
        "referred_user_id": "lia",
        "currency": "BTC",
        "amount": D("0.000002"),
        "fee": D("0.00001"),
        "rate": D("0.2"),
        "source_transaction_id": "tx-1",
        "source_transaction_type": "swap",
        "source_occurred_at": T0,
        "status": "pending",
        "reason": None,
        "created_at": T0,
        "updated_at": T0,
    }
    assert first == expected
    assert await commissions.get(due.reference_id) == expected
    # Claimed again (a redelivery, or other figures under the same reference): the first record.
    other = replace(due, referrer_id="eve", amount=D("1"), source_transaction_type="p2p")
    assert await commissions.claim(other, T0 + timedelta(seconds=5)) == expected
    assert await commissions.get("referral:tx-2:BTC") is None


async def test_a_new_claim_answers_what_it_was_given_and_a_read_what_is_kept(
    stores: Stores,
) -> None:
    """Instants are kept in UTC to the millisecond; the answer to the claim that stored the record
    is made of the values it was given, every later read of what was kept."""
    at = datetime(2026, 11, 30, 13, 0, 0, 456789, tzinfo=timezone(timedelta(hours=1)))
    occurred = datetime(2026, 11, 30, 11, 59, 59, 999999, tzinfo=UTC)
    claimed = await stores.commissions.claim(_due("tx-1", occurred), at)
    assert (claimed["created_at"], claimed["source_occurred_at"]) == (at, occurred)
    kept = datetime(2026, 11, 30, 12, 0, 0, 456000, tzinfo=UTC)
    read = await stores.commissions.get("referral:tx-1:BTC")
    assert read is not None
    assert (read["created_at"], read["updated_at"], read["source_occurred_at"]) == (
        kept,
        kept,
        datetime(2026, 11, 30, 11, 59, 59, 999000, tzinfo=UTC),
    )
    assert all(read[f].utcoffset() == timedelta(0) for f in ("created_at", "source_occurred_at"))
    assert await stores.commissions.claim(_due("tx-1"), T0) == read


async def test_amounts_are_kept_exact_to_34_digits(stores: Stores) -> None:
    exact = _due(
        "tx-exact",
        amount=D("1234567890.123456789012345678901234"),  # 34 significant digits
        fee=D("0.000000000000000001"),
        rate=D("0.20"),
    )
    await stores.commissions.claim(exact, T0)
    read = await stores.commissions.get(exact.reference_id)
    assert read is not None
    assert (read["amount"], read["fee"]) == (exact.amount, exact.fee)
    assert str(read["rate"]) == "0.20"  # the exponent is kept too, not only the value
    too_long = _due("tx-long", amount=D("1234567890.1234567890123456789012345"))  # 35
    with pytest.raises(Inexact):
        await stores.commissions.claim(too_long, T0)
    assert await stores.commissions.get(too_long.reference_id) is None


async def test_a_commission_is_settled_once(stores: Stores) -> None:
    commissions = stores.commissions
    await commissions.claim(_due("tx-1"), T0)
    later = T0 + timedelta(seconds=3)
    await commissions.settle("referral:tx-1:BTC", "failed", "insufficient_platform_funds", later)
    await commissions.settle("referral:tx-1:BTC", "paid", None, later + timedelta(seconds=1))
    record = await commissions.get("referral:tx-1:BTC")
    assert record is not None
    assert (record["status"], record["reason"], record["created_at"], record["updated_at"]) == (
        "failed",
        "insufficient_platform_funds",
        T0,
        later,
    )
    assert await commissions.earned_by("rob") == {}
    await commissions.settle("referral:tx-unknown:BTC", "paid", None, later)  # nothing to settle
    assert await commissions.get("referral:tx-unknown:BTC") is None


async def test_a_commission_failed_without_an_outcome_is_settled_again(stores: Stores) -> None:
    """`processing_failed` (an earlier version recorded it as a refusal): the wallet recorded
    no outcome, so a later answer settles it."""
    commissions = stores.commissions
    await commissions.claim(_due("tx-1"), T0)
    await commissions.settle("referral:tx-1:BTC", "failed", "processing_failed", T0)
    later = T0 + timedelta(seconds=1)
    await commissions.settle("referral:tx-1:BTC", "paid", None, later)
    await commissions.settle(
        "referral:tx-1:BTC", "failed", "processing_failed", later + timedelta(seconds=1)
    )
    record = await commissions.get("referral:tx-1:BTC")
    assert record is not None
    assert (record["status"], record["reason"], record["updated_at"]) == ("paid", None, later)


async def test_a_commission_failed_without_an_outcome_is_awaiting_the_wallet(
    stores: Stores,
) -> None:
    """Asked again like a pending one (before, such a referrer was never paid); a commission
    the wallet refused for good is not."""
    commissions = stores.commissions
    unrecorded, refused = _due("tx-unrecorded"), _due("tx-refused")
    for due in (unrecorded, refused):
        await commissions.claim(due, T0)
    await commissions.settle(unrecorded.reference_id, "failed", "processing_failed", T0)
    await commissions.settle(refused.reference_id, "failed", "insufficient_platform_funds", T0)
    cutoff = T0 + timedelta(seconds=30)
    assert _references(await commissions.awaiting_wallet(cutoff)) == {unrecorded.reference_id}
    await commissions.mark_asked(unrecorded.reference_id, cutoff)
    await commissions.mark_asked(refused.reference_id, cutoff)  # settled: not touched
    assert await commissions.awaiting_wallet(cutoff) == []
    asked = await commissions.get(unrecorded.reference_id)
    untouched = await commissions.get(refused.reference_id)
    assert asked is not None
    assert untouched is not None
    assert (asked["asked_at"], "asked_at" in untouched) == (cutoff, False)


async def test_commissions_awaiting_the_wallet_since_they_were_last_sent(
    stores: Stores,
) -> None:
    commissions = stores.commissions
    late, fresh, paid = (_due("tx-late"), _due("tx-fresh"), _due("tx-paid"))
    await commissions.claim(late, T0)
    await commissions.claim(fresh, T0 + timedelta(seconds=30))
    await commissions.claim(paid, T0)
    await commissions.settle(paid.reference_id, "paid", None, T0)

    cutoff = T0 + timedelta(seconds=30)  # sent before it: asked about again
    assert _references(await commissions.awaiting_wallet(cutoff)) == {late.reference_id}
    [record] = await commissions.awaiting_wallet(cutoff)
    assert (record["amount"], record["fee"], record["rate"]) == (
        D("0.000002"),
        D("0.00001"),
        D("0.2"),
    )
    assert "asked_at" not in record  # never asked again yet
    await commissions.mark_asked(late.reference_id, cutoff)
    assert await commissions.awaiting_wallet(cutoff) == []
    asked = await commissions.get(late.reference_id)
    assert asked is not None
    assert (asked["asked_at"], asked["status"], asked["updated_at"]) == (cutoff, "pending", T0)
    later = cutoff + timedelta(seconds=1)
    assert _references(await commissions.awaiting_wallet(later)) == {
        late.reference_id,
        fresh.reference_id,
    }
    await commissions.settle(late.reference_id, "failed", "insufficient_platform_funds", later)
    await commissions.mark_asked(late.reference_id, T0)  # settled: not touched
    settled = await commissions.get(late.reference_id)
    assert settled is not None
    assert settled["asked_at"] == cutoff
    assert _references(await commissions.awaiting_wallet(later)) == {fresh.reference_id}
    await commissions.mark_asked("referral:tx-unknown:BTC", T0)  # nothing to mark
    assert await commissions.get("referral:tx-unknown:BTC") is None


async def test_at_most_limit_commissions_are_awaiting_the_wallet(stores: Stores) -> None:
    dues = [_due(f"tx-{n}") for n in range(5)]
    for due in dues:
        await stores.commissions.claim(due, T0)
    cutoff = T0 + timedelta(seconds=1)
    everyone = {d.reference_id for d in dues}
    assert _references(await stores.commissions.awaiting_wallet(cutoff)) == everyone
    two = await stores.commissions.awaiting_wallet(cutoff, limit=2)
    assert len(two) == 2
    assert _references(two) <= everyone
    assert _references(await stores.commissions.awaiting_wallet(cutoff, limit=0)) == everyone


async def test_commissions_awaiting_the_wallet_come_oldest_first_a_page_after_another(
    stores: Stores,
) -> None:
    """By `created_at`, then reference; each page after the last one's last (the ask-again's
    pass), an empty page at the end."""
    for seconds, source in [(2, "tx-d"), (0, "tx-b"), (1, "tx-c"), (1, "tx-a"), (3, "tx-e")]:
        await stores.commissions.claim(_due(source), T0 + timedelta(seconds=seconds))
    cutoff = T0 + timedelta(seconds=3)  # tx-e was sent since
    await stores.commissions.mark_asked(commission_reference("tx-c", "BTC"), cutoff)  # and tx-c
    pages: list[list[str]] = []
    after = None
    while page := await stores.commissions.awaiting_wallet(cutoff, 2, after=after):
        pages.append([r["source_transaction_id"] for r in page])
        after = (page[-1]["created_at"], page[-1]["reference_id"])
    assert pages == [["tx-b", "tx-a"], ["tx-d"]]
    everything = await stores.commissions.awaiting_wallet(cutoff, 10)
    assert [r["source_transaction_id"] for r in everything] == ["tx-b", "tx-a", "tx-d"]


async def test_when_last_sent_is_compared_to_the_millisecond(stores: Stores) -> None:
    """Within one millisecond nothing was sent before anything: both sides are kept, and
    compared, in whole milliseconds."""
    created = T0 + timedelta(microseconds=200)
    await stores.commissions.claim(_due("tx-1"), created)
    assert await stores.commissions.awaiting_wallet(T0 + timedelta(microseconds=900)) == []
    assert len(await stores.commissions.awaiting_wallet(T0 + MS)) == 1
    await stores.commissions.mark_asked(
        "referral:tx-1:BTC", T0 + 5 * MS + timedelta(microseconds=1)
    )
    assert await stores.commissions.awaiting_wallet(T0 + 5 * MS + timedelta(microseconds=999)) == []
    assert len(await stores.commissions.awaiting_wallet(T0 + 6 * MS)) == 1


async def test_earned_is_what_was_paid_per_currency(stores: Stores) -> None:
    commissions = stores.commissions
    claims = [
        (_due("tx-1", amount=D("0.1")), "paid"),
        (_due("tx-2", amount=D("0.000000000000000001")), "paid"),
        (_due("tx-3", currency="ETH", reference_id="referral:tx-3:ETH", amount=D("2.5")), "paid"),
        (_due("tx-4", amount=D("7")), "failed"),
        (_due("tx-5", amount=D("9")), None),  # still pending
        (_due("tx-6", referrer_id="eve", amount=D("11")), "paid"),
    ]
    for due, status in claims:
        await commissions.claim(due, T0)
        if status:
            await commissions.settle(due.reference_id, status, None, T0)
    assert await commissions.earned_by("rob") == {
        "BTC": D("0.100000000000000001"),
        "ETH": D("2.5"),
    }
    assert await commissions.earned_by("eve") == {"BTC": D("11")}
    assert await commissions.earned_by("lia") == {}


async def test_records_handed_out_are_copies(stores: Stores) -> None:
    commissions = stores.commissions
    claimed = await commissions.claim(_due("tx-1"), T0)
    read = await commissions.get("referral:tx-1:BTC")
    [awaiting] = await commissions.awaiting_wallet(T0 + timedelta(seconds=1))
    assert read is not None
    for record in (claimed, read, awaiting):
        record["status"] = "paid"
        record["amount"] = D("1000")
        record["referrer_id"] = "mallory"
    again = await commissions.claim(_due("tx-1"), T0)
    assert (again["status"], again["amount"], again["referrer_id"]) == (
        "pending",
        D("0.000002"),
        "rob",
    )
    assert await commissions.get("referral:tx-1:BTC") == again
    assert await commissions.earned_by("mallory") == {}
    assert await commissions.earned_by("rob") == {}


# MongoDB only: the memory store reads and stamps a binding in one step, with no await between.


async def test_mongo_a_reader_that_found_a_binding_unstamped_keeps_the_first_stamp(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    database = mongo_client[unique_database_name("referrals_stale_reader")]
    clock = FakeClock()
    try:
        bindings = MongoBindings(database, clock)
        await bindings.insert("una", "rik")
        first = await bindings.of("una")
        # A second reader that found the document unstamped a moment ago stamps nothing over it.
        clock.advance(5)
        late = MongoBindings(database, clock)
        stale = {"_id": "una", "referrer_id": "rik", "bound_at": None}
        assert await late._stamped(stale) == first
        assert await bindings.of("una") == first
    finally:
        await mongo_client.drop_database(database.name)
