"""The matcher over the real (embedded) MongoDB: a crash between storing a batch of decisions and
projecting it, then a restart: the decisions are projected, the book holds exactly the resting
orders, the wallet commands of the batch are sent again, and the redelivered messages change
nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from trading.spot.adapters.mongo import MongoSpotStore
from trading.spot.domain.book import OrderType, Side, Status
from trading.spot.domain.markets import MARKETS, Fees, Market
from trading.spot.matcher import MarketMatcher
from trading.spot.messages import OrderMessage
from trading.spot.orders import SpotBatch, SpotOrder
from trading.spot.wallet import SpotWallet

pytestmark = pytest.mark.integration

MARKET = MARKETS["BTC-GBP"]
FEES = Fees.of("0.001", "0.002")


class RecordingWallet(SpotWallet):
    def __init__(self) -> None:
        self.batches: list[str] = []
        self.released: list[tuple[str, int]] = []

    async def lock(self, order: SpotOrder) -> None:
        raise AssertionError("the matcher never locks")

    async def dispatch(self, batch: SpotBatch, market: Market) -> None:
        self.batches.append(batch.batch_id)
        self.released += [(c.order_id, c.released) for c in batch.changes if c.released]


class CrashBeforeProjection(MongoSpotStore):
    async def project(self, batch: SpotBatch, market: Market, at: datetime) -> None:
        raise RuntimeError("killed")


def now() -> datetime:
    return datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def limit(order_id: str, user: str, side: Side, price: str, amount: str) -> SpotOrder:
    steps = MARKET.steps(Decimal(amount))
    ticks = MARKET.ticks(Decimal(price))
    hold = MARKET.base_units(steps) if side is Side.SELL else MARKET.quote_ceil(ticks, steps)
    currency = MARKET.base if side is Side.SELL else MARKET.quote
    return SpotOrder(
        order_id=order_id,
        user_id=user,
        pair=MARKET.pair,
        side=side,
        type=OrderType.LIMIT,
        price=Decimal(price),
        amount=Decimal(amount),
        quote_amount=None,
        lock_currency=currency.code,
        lock_amount=Decimal(hold).scaleb(-currency.scale),
        created_at=now(),
        remaining=steps,
        hold=hold,
    )


def locked(order_id: str) -> OrderMessage:
    return OrderMessage(kind="locked", order_id=order_id, pair=MARKET.pair)


async def test_a_crash_after_storing_decisions_loses_nothing(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoSpotStore(mongo_database)
    await store.ensure_indexes()
    for order in (
        limit("ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit("ask-2", "alice", Side.SELL, "101.00", "0.01"),
        limit("bid-1", "bob", Side.BUY, "102.00", "0.015"),
    ):
        await store.add(order)
    first = RecordingWallet()
    matcher = MarketMatcher(MARKET, FEES, store, first, now)
    await matcher.recover()
    rested = await matcher.apply([locked("ask-1"), locked("ask-2")])
    assert rested is not None
    assert first.batches == [rested.batch_id]

    crashing = MarketMatcher(MARKET, FEES, CrashBeforeProjection(mongo_database), first, now)
    await crashing.recover()
    with pytest.raises(RuntimeError, match="killed"):
        await crashing.apply([locked("bid-1")])
    assert first.batches == [rested.batch_id]  # nothing sent for the unprojected batch
    assert (await store.get("bid-1")).status is Status.PENDING  # type: ignore[union-attr]

    second = RecordingWallet()
    restarted = MarketMatcher(MARKET, FEES, store, second, now)
    await restarted.recover()
    bid = await store.get("bid-1")
    ask2 = await store.get("ask-2")
    assert bid is not None
    assert ask2 is not None
    assert (bid.status, bid.filled_amount, [f.price for f in bid.fills]) == (
        Status.FILLED,
        Decimal("0.015"),
        [Decimal(100), Decimal(101)],
    )
    assert (ask2.status, ask2.filled_amount) == (Status.PARTIALLY_FILLED, Decimal("0.005"))
    assert [o.order_id for o in restarted.book.resting()] == ["ask-2"]
    assert restarted.book.depth() == ([], [(10100, 500)])
    # the crashed batch's commands went out after the restart. bob locked 1.53 (0.015 × 102) and
    # paid 1.00 + 0.50 (0.005 × 101 = 0.505, down): 0.03 GBP is unlocked
    assert len(second.batches) == 1
    assert second.released == [("bid-1", 3)]
    assert (await store.market_state(MARKET.pair) or {})["asks"] == [["101.00", "0.005"]]

    # the messages are delivered again (offsets were never committed): nothing changes
    assert await restarted.apply([locked("ask-1"), locked("ask-2"), locked("bid-1")]) is None
    cancel = OrderMessage(kind="cancel", order_id="ask-2", pair=MARKET.pair)
    cancelled = await restarted.apply([cancel])
    assert cancelled is not None
    assert [(c.order_id, c.status, c.released) for c in cancelled.changes] == [
        ("ask-2", Status.CANCELLED, 500_000)
    ]
    assert (await store.market_state(MARKET.pair) or {})["asks"] == []
    assert await restarted.apply([cancel]) is None


async def test_only_orders_past_their_expiry_are_due(
    mongo_database: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoSpotStore(mongo_database)
    forever = limit("gtc", "carol", Side.SELL, "100.00", "0.01")
    brief = limit("gtt", "carol", Side.SELL, "100.00", "0.01")
    brief.expires_at = now()
    later = limit("later", "carol", Side.SELL, "100.00", "0.01")
    later.expires_at = datetime(2026, 12, 1, tzinfo=UTC)
    for order in (forever, brief, later):
        order.status = Status.OPEN
        await store.add(order)
    assert [o.order_id for o in await store.expired(now())] == ["gtt"]
