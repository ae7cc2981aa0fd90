"""The referral storage over the real MongoDB: a binding gets its `bound_at` from its first reader,
once, and the commissions still waiting on the wallet are found by when they were last sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from trading.referrals.adapters.mongo import (
    BINDINGS,
    COMMISSIONS,
    MongoBindings,
    MongoCommissions,
)
from trading.referrals.domain.bindings import Binding
from trading.referrals.domain.commissions import CommissionDue, commission_reference
from trading.testing import FakeClock

type Database = AsyncDatabase[dict[str, Any]]


@pytest_asyncio.fixture(loop_scope="session")
async def database(mongo_database: Database) -> AsyncIterator[Database]:
    for collection in (BINDINGS, COMMISSIONS):
        await mongo_database[collection].delete_many({})
    yield mongo_database


def _due(source_transaction_id: str, at: datetime) -> CommissionDue:
    return CommissionDue(
        reference_id=commission_reference(source_transaction_id, "BTC"),
        referrer_id="rob",
        referred_user_id="lia",
        currency="BTC",
        amount=Decimal("0.000002"),
        fee=Decimal("0.00001"),
        rate=Decimal("0.2"),
        source_transaction_id=source_transaction_id,
        source_transaction_type="swap",
        source_occurred_at=at,
    )


async def test_a_binding_is_stamped_by_its_first_reader_once(database: Database) -> None:
    clock = FakeClock()
    bindings = MongoBindings(database, clock)
    assert await bindings.insert("ivy", "rex") is None
    stored = await database[BINDINGS].find_one({"_id": "ivy"})
    assert stored is not None
    assert stored["bound_at"] is None  # not counting fees yet
    clock.advance(1)
    assert await bindings.of_many(["ivy", "nobody"]) == {"ivy": Binding("ivy", "rex", clock.now)}
    stamped_at = clock.now
    clock.advance(1)
    assert await bindings.of("ivy") == Binding("ivy", "rex", stamped_at)
    assert await bindings.insert("ivy", "ron") == Binding("ivy", "rex", stamped_at)


async def test_two_racing_readers_stamp_a_binding_once(database: Database) -> None:
    clock = FakeClock()
    bindings = MongoBindings(database, clock)
    await bindings.insert("una", "rik")
    first = await bindings.of("una")
    # A second reader that found the document unstamped a moment ago stamps nothing over it.
    clock.advance(5)
    late = MongoBindings(database, clock)
    assert await late._stamped({"_id": "una", "referrer_id": "rik", "bound_at": None}) == first


async def test_commissions_awaiting_the_wallet_since_they_were_last_sent(
    database: Database,
) -> None:
    commissions = MongoCommissions(database)
    start = FakeClock().now
    late, fresh, paid = (
        _due("tx-late", start),
        _due("tx-fresh", start),
        _due("tx-paid", start),
    )
    await commissions.claim(late, start)
    await commissions.claim(fresh, start + timedelta(seconds=30))
    await commissions.claim(paid, start)
    await commissions.settle(paid.reference_id, "paid", None, start)

    def references(records: list[dict[str, Any]]) -> set[str]:
        return {r["reference_id"] for r in records}

    cutoff = start + timedelta(seconds=30)  # sent before it: asked about again
    assert references(await commissions.awaiting_wallet(cutoff)) == {late.reference_id}
    [record] = await commissions.awaiting_wallet(cutoff)
    assert (record["amount"], record["fee"], record["rate"]) == (
        Decimal("0.000002"),
        Decimal("0.00001"),
        Decimal("0.2"),
    )
    await commissions.mark_asked(late.reference_id, cutoff)
    assert await commissions.awaiting_wallet(cutoff) == []
    later = cutoff + timedelta(seconds=1)
    assert references(await commissions.awaiting_wallet(later)) == {
        late.reference_id,
        fresh.reference_id,
    }
    assert len(await commissions.awaiting_wallet(later, limit=1)) == 1
    await commissions.settle(late.reference_id, "failed", "insufficient_platform_funds", later)
    await commissions.mark_asked(late.reference_id, start)  # settled: not touched
    assert references(await commissions.awaiting_wallet(later)) == {fresh.reference_id}
