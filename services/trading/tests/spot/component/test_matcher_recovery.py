"""The matcher over the real (embedded) MongoDB: a crash between storing a batch of decisions and
projecting it, then a restart: the decisions are projected, the book holds exactly the resting
orders, the wallet commands of the batch are sent again, and the redelivered messages change
nothing. Two matchers of one market are fenced by the store, over MongoDB and over the in-memory
store alike, also when one rebuilds its book beside a batch the other stored and has not (fully)
projected: no resting quantity is filled twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import TopicPartition
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from structlog.testing import capture_logs

from shared.testing.fixtures import unique_database_name
from trading.errors import Conflict, Invalid
from trading.messaging import EventPublisher
from trading.spot.adapters.memory import MemorySpotStore
from trading.spot.adapters.mongo import MongoSpotStore
from trading.spot.domain.book import OrderType, Side, Status
from trading.spot.domain.markets import MARKETS, Fees, Market
from trading.spot.matcher import MarketMatcher, MatcherConsumer, _Rebalance
from trading.spot.messages import OrderMessage, encode
from trading.spot.orders import SpotBatch, SpotOrder
from trading.spot.ports import SpotStore
from trading.spot.service import SpotOrders
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

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        self.batches.append(batch.batch_id)
        self.released += [(c.order_id, c.released) for c in batch.changes if c.released]
        return True


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


async def store_with(database: AsyncDatabase[dict[str, Any]], *orders: SpotOrder) -> MongoSpotStore:
    return await holding(MongoSpotStore(database), *orders)


async def holding[S: SpotStore](store: S, *orders: SpotOrder) -> S:
    if isinstance(store, MongoSpotStore):
        await store.ensure_indexes()
    for order in orders:
        await store.add(order)
    return store


def cross_at_100(prefix: str) -> tuple[SpotOrder, ...]:
    """An ask and two bids that each cross it in full: only one of them may get it."""
    return (
        limit(f"{prefix}-ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit(f"{prefix}-bid-1", "bob", Side.BUY, "100.00", "0.01"),
        limit(f"{prefix}-bid-2", "carol", Side.BUY, "100.00", "0.01"),
    )


@pytest_asyncio.fixture
async def own_database(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A database of this test's own: a book that starts empty."""
    name = unique_database_name("spot_matchers")
    try:
        yield mongo_client[name]
    finally:
        await mongo_client.drop_database(name)


@pytest.fixture(params=["memory", "mongo"])
def empty_store(request: pytest.FixtureRequest) -> SpotStore:
    """A store of this test's own, in memory or over MongoDB: a book that starts empty. Sync on
    purpose: the MongoDB fixtures are pulled only by its variant."""
    if request.param == "memory":
        return MemorySpotStore()
    database: AsyncDatabase[dict[str, Any]] = request.getfixturevalue("own_database")
    return MongoSpotStore(database)


class KilledBeforeTheWallet(RecordingWallet):
    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        raise RuntimeError("killed")


class SeeingTheOrders(RecordingWallet):
    """Records what the orders of each batch showed while the wallet applied it."""

    def __init__(self, store: SpotStore) -> None:
        super().__init__()
        self.store = store
        self.shown: list[tuple[str, Status]] = []

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        for change in batch.changes:
            order = await self.store.get(change.order_id)
            assert order is not None
            self.shown.append((change.order_id, order.status))
        return await super().dispatch(batch, market)


@pytest.mark.parametrize("killed", ["before-the-wallet", "before-projection"])
async def test_a_crash_after_storing_decisions_loses_nothing(
    own_database: AsyncDatabase[dict[str, Any]], killed: str
) -> None:
    """The wallet applies a batch before its orders show it; a crash between storing the
    decisions and showing them sends each command (again, if it had not been marked sent) and
    shows them on restart."""
    store = await store_with(
        own_database,
        limit("ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit("ask-2", "alice", Side.SELL, "101.00", "0.01"),
        limit("bid-1", "bob", Side.BUY, "102.00", "0.015"),
    )
    first = SeeingTheOrders(store)
    matcher = MarketMatcher(MARKET, FEES, store, first, now)
    await matcher.recover()
    rested = await matcher.apply([locked("ask-1"), locked("ask-2")])
    assert rested is not None
    assert first.batches == [rested.batch_id]
    # The wallet had the asks' decisions while the orders still showed them pending.
    assert first.shown == [("ask-1", Status.PENDING), ("ask-2", Status.PENDING)]

    if killed == "before-the-wallet":
        crashing = MarketMatcher(MARKET, FEES, store, KilledBeforeTheWallet(), now)
    else:
        crashing = MarketMatcher(MARKET, FEES, CrashBeforeProjection(own_database), first, now)
    await crashing.recover()
    with pytest.raises(RuntimeError, match="killed"):
        await crashing.apply([locked("bid-1")])
    sent_before = first.batches[1:]
    assert len(sent_before) == (0 if killed == "before-the-wallet" else 1)
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
    # The crashed batch's commands went out once: before the crash, or after the restart. bob
    # locked 1.53 (0.015 × 102) and paid 1.00 + 0.50 (0.005 × 101 = 0.505, down): 0.03 GBP is
    # unlocked.
    assert len(sent_before) + len(second.batches) == 1
    assert first.released + second.released == [("bid-1", 3)]
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
    own_database: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoSpotStore(own_database)
    forever = limit("gtc", "carol", Side.SELL, "100.00", "0.01")
    brief = limit("gtt", "carol", Side.SELL, "100.00", "0.01")
    brief.expires_at = now()
    later = limit("later", "carol", Side.SELL, "100.00", "0.01")
    later.expires_at = datetime(2026, 12, 1, tzinfo=UTC)
    for order in (forever, brief, later):
        order.status = Status.OPEN
        await store.add(order)
    assert [o.order_id for o in await store.expired(now())] == ["gtt"]


async def test_a_matcher_whose_book_is_stale_is_fenced_by_the_store(
    empty_store: SpotStore,
) -> None:
    """Two matchers of one market at once (a partition that moved while its old owner was still
    deciding): the second to store a sequence number is fenced. It acts on none of its decisions,
    rebuilds its book from the store and decides its messages again there: no order is filled
    twice, and no fill goes to the wallet that the store does not hold."""
    store = await holding(empty_store, *cross_at_100("fenced"))
    owner_wallet, stale_wallet = RecordingWallet(), RecordingWallet()
    owner = MarketMatcher(MARKET, FEES, store, owner_wallet, now)
    stale = MarketMatcher(MARKET, FEES, store, stale_wallet, now)
    await owner.recover()
    rested = await owner.apply([locked("fenced-ask-1")])
    assert rested is not None
    await stale.recover()  # both books hold ask-1 now
    filled = await owner.apply([locked("fenced-bid-1")])
    assert filled is not None
    assert len(filled.fills) == 1

    # The stale book still shows the ask; the store says the first bid took it.
    decided = await stale.apply([locked("fenced-bid-2")])

    assert decided is not None
    assert decided.first > filled.last  # decided again after the owner's batch
    assert decided.fills == []
    assert stale_wallet.batches == [decided.batch_id]  # nothing of the fenced decisions went out
    ask, bid1, bid2 = [await store.get(o) for o in ("fenced-ask-1", "fenced-bid-1", "fenced-bid-2")]
    assert ask is not None
    assert bid1 is not None
    assert bid2 is not None
    assert (ask.status, len(ask.fills)) == (Status.FILLED, 1)
    assert (bid1.status, len(bid1.fills)) == (Status.FILLED, 1)
    assert (bid2.status, bid2.fills) == (Status.OPEN, [])
    assert [o.order_id for o in stale.book.resting()] == ["fenced-bid-2"]


async def test_a_batch_stored_again_after_a_lost_answer_is_still_acted_on(
    own_database: AsyncDatabase[dict[str, Any]],
) -> None:
    """A store that answered the insert with an error after writing it: the retry finds the same
    decisions stored, and the matcher goes on with them (this is not a fence)."""
    store = await store_with(
        own_database,
        limit("retried-ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit("retried-bid-1", "bob", Side.BUY, "100.00", "0.01"),
    )

    class LostAnswer(MongoSpotStore):
        lost = 0

        async def add_batch(self, batch: SpotBatch, at: datetime) -> bool:
            stored = await super().add_batch(batch, at)
            if not self.lost:
                self.lost += 1
                raise ConnectionResetError("the answer was lost")
            return stored

    wallet = RecordingWallet()
    matcher = MarketMatcher(MARKET, FEES, LostAnswer(own_database), wallet, now)
    await matcher.recover()
    await matcher.apply([locked("retried-ask-1")])
    filled = await matcher.apply([locked("retried-bid-1")])
    assert filled is not None
    assert len(filled.fills) == 1
    assert wallet.batches[-1] == filled.batch_id
    bid = await store.get("retried-bid-1")
    assert bid is not None
    assert bid.status is Status.FILLED


async def test_a_batch_that_decides_nothing_leaves_no_gap_for_a_stale_matcher(
    empty_store: SpotStore,
) -> None:
    """A batch with nothing to decide stores nothing and gives its number back: the stale
    matcher's next batch then starts right after the batch both books saw, where the owner's
    batch already is, and is fenced there."""
    store = await holding(empty_store, *cross_at_100("gap"))
    stale_wallet = RecordingWallet()
    owner = MarketMatcher(MARKET, FEES, store, RecordingWallet(), now)
    stale = MarketMatcher(MARKET, FEES, store, stale_wallet, now)
    await owner.recover()
    assert await owner.apply([locked("gap-ask-1")]) is not None
    await stale.recover()
    assert await stale.apply([locked("no-such-order")]) is None  # nothing decided, nothing stored

    filled = await owner.apply([locked("gap-bid-1")])
    decided = await stale.apply([locked("gap-bid-2")])

    assert filled is not None
    assert len(filled.fills) == 1
    assert decided is not None
    assert (decided.first, decided.fills) == (filled.last + 1, [])
    assert stale_wallet.batches == [decided.batch_id]
    ask = await store.get("gap-ask-1")
    assert ask is not None
    assert (ask.status, len(ask.fills)) == (Status.FILLED, 1)


class Rebuilding:
    """The store as a matcher rebuilding its book sees it, with another matcher's work done in the
    middle of the rebuild, once: right after the rebuild read the batches it projects
    (`at="batches_after"`), or right before it reads the resting orders (`at="resting"`)."""

    def __init__(self, store: SpotStore, at: str, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._at = at
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _once(self, point: str) -> None:
        work = self._meanwhile
        if point == self._at and work is not None:
            self._meanwhile = None
            await work()

    async def batches_after(self, pair: str, sequence: int) -> list[SpotBatch]:
        found = await self._store.batches_after(pair, sequence)
        await self._once("batches_after")
        return found

    async def resting(self, pair: str) -> list[SpotOrder]:
        await self._once("resting")
        return await self._store.resting(pair)

    async def undispatched(self, pair: str, **page: Any) -> list[SpotBatch]:
        found = await self._store.undispatched(pair, **page)
        await self._once("undispatched")
        return found


class DiesWhileProjecting:
    """The store of a matcher whose process dies while projecting a batch it stored: the orders
    in `reached` got their update, the batch's other orders and its market's state none."""

    def __init__(self, store: SpotStore, reached: frozenset[str] = frozenset()) -> None:
        self._store = store
        self._reached = reached

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def project(self, batch: SpotBatch, market: Market, at: datetime) -> None:
        reached = [c for c in batch.changes if c.order_id in self._reached]
        if reached:
            # `project` writes each order by its id and the state of the batch's market: under
            # another market's name, only the orders' writes land where the real ones would
            elsewhere = replace(batch, pair=MARKETS["ETH-GBP"].pair, changes=reached, fills=[])
            await self._store.project(elsewhere, market, at)
        raise RuntimeError("killed")


def fills_of(batches: list[SpotBatch], order_id: str) -> list[str]:
    return [
        f.trade_id
        for b in batches
        for f in b.fills
        if order_id in (f.buy_order_id, f.sell_order_id)
    ]


@pytest.mark.parametrize(
    ("at", "reached"),
    [
        # the owner stored a batch and died before projecting any of it, while the new owner,
        # having read the batches to project, had yet to read the last number stored
        ("batches_after", frozenset()),
        # the owner's projection reached the order it rested last (at the batch's last number)
        # but not the ask its bid took, when the new owner read the resting orders
        ("resting", frozenset({"late-ask-2"})),
    ],
)
async def test_a_rebuild_beside_a_half_projected_batch_fills_nothing_twice(
    empty_store: SpotStore, at: str, reached: frozenset[str]
) -> None:
    """A matcher takes a market over (a partition that moved, a restart) while the old owner has
    stored a batch that fills a resting ask but has not projected all of it: the ask still rests
    in `spot_orders`. The new book starts from the last batch the rebuild projected itself, so its
    first batch follows that one, where the old owner's batch is: it is fenced, rebuilds with the
    old owner's batch projected, and the ask is not filled a second time."""
    store = await holding(
        empty_store,
        limit("late-ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit("late-bid-1", "bob", Side.BUY, "100.00", "0.01"),
        limit("late-ask-2", "dave", Side.SELL, "101.00", "0.01"),
        limit("late-bid-2", "carol", Side.BUY, "100.00", "0.01"),
    )
    owner = MarketMatcher(MARKET, FEES, store, RecordingWallet(), now)
    await owner.recover()
    rested = await owner.apply([locked("late-ask-1")])
    assert rested is not None
    dying = MarketMatcher(MARKET, FEES, DiesWhileProjecting(store, reached), RecordingWallet(), now)
    await dying.recover()  # the old owner's book, as it was before it died

    async def old_owner_stores_a_fill_and_dies() -> None:
        with pytest.raises(RuntimeError, match="killed"):
            await dying.apply([locked("late-bid-1"), locked("late-ask-2")])
        # half projected: the taken ask still rests, what the projection reached shows
        shown = {o.order_id: o.book_sequence for o in await store.resting(MARKET.pair)}
        assert shown == {"late-ask-1": rested.last} | dict.fromkeys(reached, rested.last + 4)
        assert (await store.market_state(MARKET.pair) or {})["sequence"] == rested.last

    wallet = RecordingWallet()
    new_owner = MarketMatcher(
        MARKET, FEES, Rebuilding(store, at, old_owner_stores_a_fill_and_dies), wallet, now
    )
    await new_owner.recover()
    [stored] = await store.batches_after(MARKET.pair, rested.last)  # the old owner's, unprojected
    assert fills_of([stored], "late-ask-1") != []

    decided = await new_owner.apply([locked("late-bid-2")])

    assert decided is not None
    assert decided.first == stored.last + 1
    assert decided.fills == []  # the ask was the old owner's bid's: carol's bid rests
    batches = await store.batches_after(MARKET.pair, 0)
    assert batches == [rested, stored, decided]
    assert fills_of(batches, "late-ask-1") == [f.trade_id for f in stored.fills]
    ask, bid, carol = [await store.get(o) for o in ("late-ask-1", "late-bid-1", "late-bid-2")]
    assert ask is not None
    assert bid is not None
    assert carol is not None
    assert (ask.status, len(ask.fills)) == (Status.FILLED, 1)
    assert (bid.status, len(bid.fills)) == (Status.FILLED, 1)
    assert (carol.status, carol.fills) == (Status.OPEN, [])
    assert [o.order_id for o in new_owner.book.resting()] == ["late-ask-2", "late-bid-2"]
    assert new_owner.book.sequence == decided.last
    # what the new owner sent: its own batch only (the old owner had the wallet apply its batch
    # before it began to project it)
    assert wallet.batches == [decided.batch_id]


class WaitingOnTheWallet(RecordingWallet):
    """An owner whose batch with fills is stored and waits on the wallet until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        if batch.fills:
            self.entered.set()
            await self.release.wait()
        return await super().dispatch(batch, market)


@pytest.mark.parametrize("at", ["batches_after", "undispatched"])
async def test_a_rebuild_beside_a_batch_waiting_on_the_wallet_shows_it_only_once_sent(
    empty_store: SpotStore, at: str
) -> None:
    """The old owner stores a fill and waits on the wallet while a new owner rebuilds. Before,
    a batch stored between the rebuild's read of the unsent batches and its read of the batches
    to project was projected without being sent: the bid read filled, the wallet not asked."""
    store = await holding(
        empty_store,
        limit("wait-ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit("wait-bid-1", "bob", Side.BUY, "100.00", "0.01"),
    )
    old_wallet = WaitingOnTheWallet()
    old_owner = MarketMatcher(MARKET, FEES, store, old_wallet, now)
    await old_owner.recover()
    assert await old_owner.apply([locked("wait-ask-1")]) is not None
    waiting: list[asyncio.Task[SpotBatch | None]] = []

    async def old_owner_stores_a_fill() -> None:
        waiting.append(asyncio.create_task(old_owner.apply([locked("wait-bid-1")])))
        await old_wallet.entered.wait()  # stored; its commands wait on the wallet

    new_wallet = SeeingTheOrders(store)
    new_owner = MarketMatcher(
        MARKET, FEES, Rebuilding(store, at, old_owner_stores_a_fill), new_wallet, now
    )
    await new_owner.recover()

    bid = await store.get("wait-bid-1")
    assert bid is not None
    sent_first = ("wait-bid-1", Status.PENDING) in new_wallet.shown
    assert bid.status is Status.PENDING or sent_first, (bid.status, new_wallet.shown)
    # what the new owner sent, it sent before any of its orders showed it
    assert all(status is not Status.FILLED for _, status in new_wallet.shown), new_wallet.shown
    old_wallet.release.set()
    await waiting[0]
    assert (await store.get("wait-bid-1")).status is Status.FILLED  # type: ignore[union-attr]


async def test_a_market_buy_is_priced_from_the_latest_batch_while_the_wallet_settles_it(
    empty_store: SpotStore,
) -> None:
    """The snapshot shows a batch once the wallet applied it. Before, a market buy placed while
    the batch that rested an ask waited on the wallet saw no asks and failed no_liquidity."""
    bid = limit("lag-bid", "bob", Side.BUY, "100.00", "0.01")
    ask = limit("lag-ask", "alice", Side.SELL, "100.00", "0.5")
    store = await holding(empty_store, bid, ask)
    wallet = WaitingOnTheWallet()
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now)
    await matcher.recover()
    assert await matcher.apply([locked("lag-bid")]) is not None
    settling = asyncio.create_task(matcher.apply([locked("lag-ask")]))  # takes the bid, rests 0.49
    await wallet.entered.wait()
    assert (await store.market_state(MARKET.pair) or {})["asks"] == []  # not shown yet
    placed = await market_buy(store, "carol", "0.1")

    assert (placed.status, placed.lock_amount) == (Status.PENDING, Decimal("10.50"))  # 10 + 5 %
    wallet.release.set()
    await settling
    assert (await store.market_state(MARKET.pair) or {})["asks"] == [["100.00", "0.49"]]


async def test_a_market_buy_beyond_the_shown_levels_is_priced_from_the_latest_batch_too(
    empty_store: SpotStore,
) -> None:
    """Asks rested by a batch that waits on the wallet, more than the snapshot's levels hold:
    before, the lock was priced from the resting orders as last shown (none), and the order
    failed no_liquidity."""
    asks = [
        limit("deep-ask-1", "alice", Side.SELL, "100.00", "0.01"),
        limit("deep-ask-2", "alice", Side.SELL, "101.00", "0.01"),
    ]
    bid = limit("deep-bid", "bob", Side.BUY, "99.00", "0.001")
    seller = limit("deep-seller", "carol", Side.SELL, "99.00", "0.001")
    store = await holding(empty_store, *asks, bid, seller)
    wallet = WaitingOnTheWallet()
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now, levels=1)
    await matcher.recover()
    assert await matcher.apply([locked("deep-bid")]) is not None
    # One batch: a fill (so it waits on the wallet) and both asks resting.
    waiting = asyncio.create_task(
        matcher.apply([locked("deep-seller"), *(locked(a.order_id) for a in asks)])
    )
    await wallet.entered.wait()
    placed = await market_buy(store, "dora", "0.02")

    # 0.01 × 100 + 0.01 × 101 = 2.01, plus 5 %: 2.1105, up
    assert (placed.status, placed.lock_amount) == (Status.PENDING, Decimal("2.12"))
    wallet.release.set()
    await waiting


async def test_a_cancel_that_loses_to_a_fill_is_refused_not_answered_as_done(
    empty_store: SpotStore,
) -> None:
    """The order reads open until the wallet applied its fill: a cancel asked meanwhile found it
    filled when it looked again, and answered 200 with the filled order."""
    ask = limit("race-ask", "alice", Side.SELL, "100.00", "0.01")
    bid = limit("race-bid", "bob", Side.BUY, "100.00", "0.01")
    store = await holding(empty_store, ask, bid)
    wallet = WaitingOnTheWallet()
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now)
    await matcher.recover()
    assert await matcher.apply([locked("race-ask")]) is not None
    filling = asyncio.create_task(matcher.apply([locked("race-bid")]))
    await wallet.entered.wait()  # filled in the book; the order still reads open
    orders = SpotOrders(
        store, NoLocks(), NoPublisher(), "t.trading.orders", FEES, now, cancel_wait_seconds=5
    )

    async def wallet_answers() -> None:
        await asyncio.sleep(0.1)
        wallet.release.set()

    answering = asyncio.create_task(wallet_answers())
    with pytest.raises(Conflict) as refused:
        await orders.cancel("race-ask", "alice")
    assert refused.value.code == "order_not_open"
    await asyncio.gather(filling, answering)
    assert (await store.get("race-ask")).status is Status.FILLED  # type: ignore[union-attr]


def eth_sell(order_id: str, user: str) -> SpotOrder:
    """A limit sell of 0.01 ETH at 100.00 GBP in the ETH-GBP market."""
    eth = MARKETS["ETH-GBP"]
    steps = eth.steps(Decimal("0.01"))
    return replace(
        limit(order_id, user, Side.SELL, "100.00", "0.01"),
        pair=eth.pair,
        lock_currency="ETH",
        remaining=steps,
        hold=eth.base_units(steps),
    )


class OnePoll:
    """trading.orders as the matcher loop polls it: these records once, then nothing."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.polled = False
        self.committed = asyncio.Event()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, Any]:
        if self.polled:
            await asyncio.sleep(3600)
        self.polled = True
        return {"tp": self.records}

    async def commit(self) -> None:
        self.committed.set()


async def two_markets_polled_once(
    store: SpotStore, wallet: RecordingWallet, *orders: SpotOrder
) -> tuple[MatcherConsumer, OnePoll]:
    """The BTC-GBP and ETH-GBP matchers, recovered, behind a consumer whose one poll brings the
    `locked` messages of these orders."""
    eth = MARKETS["ETH-GBP"]
    matchers = {
        MARKET.pair: MarketMatcher(MARKET, FEES, store, wallet, now),
        eth.pair: MarketMatcher(eth, FEES, store, wallet, now),
    }
    for matcher in matchers.values():
        await matcher.recover()
    poll = OnePoll(
        [
            SimpleNamespace(
                value=encode(OrderMessage(kind="locked", order_id=o.order_id, pair=o.pair))
            )
            for o in orders
        ]
    )
    consumer = MatcherConsumer(
        "unused", "t.trading.orders", lambda m: matchers[m.pair], group_id="g"
    )
    consumer._consumer = poll
    consumer.matchers = dict(matchers)
    return consumer, poll


async def test_a_market_that_fails_stops_no_other_market_of_the_poll_half_way(
    empty_store: SpotStore,
) -> None:
    """One market's batch cannot be sent (an error no retry helps), while another's was sent and
    waits on the wallet. Before, the failure cancelled the other: its money had moved and its
    orders did not show it until a restart. It finishes; then the loop ends, nothing committed."""
    eth = MARKETS["ETH-GBP"]
    ask = limit("half-ask", "alice", Side.SELL, "100.00", "0.01")
    bid = limit("half-bid", "bob", Side.BUY, "100.00", "0.01")
    eth_ask = eth_sell("half-eth", "carol")
    store = await holding(empty_store, ask, bid, eth_ask)

    class OneMarketUnsendable(RecordingWallet):
        async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
            if market.pair == eth.pair:
                raise RuntimeError("a command that cannot be built")
            await asyncio.sleep(0.2)  # the wallet's answer takes a round trip
            return await super().dispatch(batch, market)

    wallet = OneMarketUnsendable()
    consumer, poll = await two_markets_polled_once(store, wallet, eth_ask, ask, bid)

    with pytest.raises(RuntimeError, match="cannot be built"):
        await asyncio.wait_for(consumer._run(), timeout=15)

    assert not poll.committed.is_set()
    assert (await store.get("half-bid")).status is Status.FILLED  # type: ignore[union-attr]
    assert await store.undispatched(MARKET.pair) == []
    assert len(wallet.batches) == 1


async def test_markets_decided_in_one_poll_wait_on_the_wallet_at_once(
    empty_store: SpotStore,
) -> None:
    """Each market's batch waits on the wallet; one after another, a market's cancel waited for
    every other market's round trip too."""
    eth = MARKETS["ETH-GBP"]
    btc_ask = limit("poll-btc-ask", "alice", Side.SELL, "100.00", "0.01")
    eth_ask = eth_sell("poll-eth-ask", "carol")
    store = await holding(empty_store, btc_ask, eth_ask)
    started = {MARKET.pair: asyncio.Event(), eth.pair: asyncio.Event()}

    class MeetingAtTheWallet(RecordingWallet):
        """Each market's dispatch waits until the other market's has begun: one after the
        other, the first would wait for ever (the test's timeout fails it)."""

        async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
            started[market.pair].set()
            other = eth.pair if market.pair == MARKET.pair else MARKET.pair
            await asyncio.wait_for(started[other].wait(), timeout=10)
            return await super().dispatch(batch, market)

    wallet = MeetingAtTheWallet()
    consumer, poll = await two_markets_polled_once(store, wallet, btc_ask, eth_ask)
    running = asyncio.create_task(consumer._run())
    try:
        await asyncio.wait_for(poll.committed.wait(), timeout=15)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    stored = [b for p in (MARKET.pair, eth.pair) for b in await store.batches_after(p, 0)]
    assert sorted(wallet.batches) == sorted(b.batch_id for b in stored)
    assert len(stored) == 2


async def test_the_expiries_of_orders_gone_from_the_book_are_dropped(
    empty_store: SpotStore,
) -> None:
    """Before, an order with an expiry stayed in the matcher's expiry heap after it was filled or
    cancelled, until its time came (up to 90 days)."""
    asks = [limit(f"gone-{i}", "alice", Side.SELL, "100.00", "0.01") for i in range(300)]
    for ask in asks:
        ask.expires_at = now() + timedelta(days=90)
    store = await holding(empty_store, *asks)
    matcher = MarketMatcher(MARKET, FEES, store, RecordingWallet(), now)
    await matcher.recover()
    assert await matcher.apply([locked(a.order_id) for a in asks]) is not None
    cancels = [OrderMessage(kind="cancel", order_id=a.order_id, pair=MARKET.pair) for a in asks]
    assert await matcher.apply(cancels[:-1]) is not None
    assert len(matcher.book) == 1
    assert await matcher.apply([locked("none")]) is None  # the next batch tidies up
    assert len(matcher._expiries) <= 2 * len(matcher.book) + 64
    assert [entry[1] for entry in matcher._expiries] == ["gone-299"]


@pytest.mark.parametrize("restarted", [False, True], ids=["rested-here", "after-a-restart"])
async def test_a_resting_order_past_its_expiry_is_cancelled_before_a_taker_can_fill_it(
    empty_store: SpotStore, restarted: bool
) -> None:
    """Before, only an order entering the book was checked: a resting one past its
    `expires_in_seconds` was filled by the next taker until the expiry sweep's cancel arrived."""
    clock = [now()]
    brief = limit("brief-ask", "alice", Side.SELL, "100.00", "0.01")
    brief.expires_at = now() + timedelta(seconds=1)
    lasting = limit("lasting-ask", "alice", Side.SELL, "100.00", "0.01")
    lasting.expires_at = now() + timedelta(hours=1)
    bid = limit("bid", "bob", Side.BUY, "100.00", "0.01")
    store = await holding(empty_store, brief, lasting, bid)
    wallet = RecordingWallet()
    matcher = MarketMatcher(MARKET, FEES, store, wallet, lambda: clock[0])
    await matcher.recover()
    assert await matcher.apply([locked("brief-ask"), locked("lasting-ask")]) is not None
    if restarted:
        matcher = MarketMatcher(MARKET, FEES, store, wallet, lambda: clock[0])
        await matcher.recover()

    clock[0] = now() + timedelta(seconds=3)
    decided = await matcher.apply([locked("bid")])

    assert decided is not None
    expired = next(c for c in decided.changes if c.order_id == "brief-ask")
    assert (expired.status, expired.reason, expired.released) == (
        Status.CANCELLED,
        "expired",
        1_000_000,
    )
    [fill] = decided.fills  # the bid took the order whose time had not run out
    assert (fill.sell_order_id, fill.buy_order_id) == ("lasting-ask", "bid")
    ask = await store.get("brief-ask")
    assert ask is not None
    assert (ask.status, ask.reason, ask.fills) == (Status.CANCELLED, "expired", [])
    assert [o.order_id for o in matcher.book.resting()] == []


async def test_a_market_buy_by_quote_amount_buys_at_least_the_minimum_at_the_best_ask(
    empty_store: SpotStore,
) -> None:
    """BTC-GBP orders are at least 0.0001 BTC. Before, only an order by amount was held to it:
    a market buy of 0.53 GBP bought 0.00001 BTC from an ask at 52000."""
    store = await holding(empty_store, limit("min-ask", "alice", Side.SELL, "52000.00", "0.01"))
    # With no asks shown nothing is refused here: it fails no_liquidity, or meets an ask that
    # arrives before it reaches the book.
    early = await market_buy(store, "bob", spend="0.53", client_order_id="early")
    assert early.status is Status.PENDING
    matcher = MarketMatcher(MARKET, FEES, store, RecordingWallet(), now)
    await matcher.recover()
    assert await matcher.apply([locked("min-ask")]) is not None

    for spend in ("0.53", "5.19"):
        with pytest.raises(Invalid) as refused:
            await market_buy(store, "bob", spend=spend)
        assert refused.value.code == "amount_below_minimum"
        assert "best ask 52000.00" in refused.value.message
    # 0.0001 × 52000: the minimum exactly
    assert (await market_buy(store, "bob", spend="5.20")).status is Status.PENDING
    # a retry of the order placed while no ask was shown is answered with that order
    assert await market_buy(store, "bob", spend="0.53", client_order_id="early") == await store.get(
        early.order_id
    )


async def test_a_market_buy_by_quote_amount_is_held_to_the_minimum_at_the_latest_batchs_best_ask(
    empty_store: SpotStore,
) -> None:
    """The minimum is checked against the asks as a market buy's lock reads them: the latest
    stored batch's while the wallet settles it, not the snapshot a wallet round trip behind."""
    store = await holding(
        empty_store,
        limit("old-ask", "alice", Side.SELL, "52000.00", "0.01"),
        limit("lag-bid", "bob", Side.BUY, "30000.00", "0.001"),
        limit("new-ask", "carol", Side.SELL, "30000.00", "0.002"),
    )
    wallet = WaitingOnTheWallet()
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now)
    await matcher.recover()
    assert await matcher.apply([locked("old-ask"), locked("lag-bid")]) is not None
    # takes the bid and rests 0.001 at 30000, the best ask, while the wallet settles the fill
    settling = asyncio.create_task(matcher.apply([locked("new-ask")]))
    await wallet.entered.wait()
    assert (await store.market_state(MARKET.pair) or {})["asks"] == [["52000.00", "0.01"]]

    assert (
        await market_buy(store, "dora", spend="3.00")
    ).status is Status.PENDING  # 0.0001 × 30000
    with pytest.raises(Invalid) as refused:
        await market_buy(store, "dora", spend="2.99")
    assert refused.value.code == "amount_below_minimum"
    assert "best ask 30000.00" in refused.value.message
    wallet.release.set()
    await settling


async def market_buy(
    store: SpotStore,
    user: str,
    amount: str | None = None,
    *,
    spend: str | None = None,
    client_order_id: str | None = None,
) -> SpotOrder:
    """A market buy by amount or by quote amount (`spend`) placed through the service (its lock
    priced, not sent)."""
    orders = SpotOrders(store, NoLocks(), NoPublisher(), "t.trading.orders", FEES, now)
    return await orders.place(
        user,
        pair=MARKET.pair,
        side=Side.BUY,
        type=OrderType.MARKET,
        amount=amount,
        price=None,
        quote_amount=spend,
        client_order_id=client_order_id,
    )


class NoLocks(RecordingWallet):
    async def lock(self, order: SpotOrder) -> None:
        pass


class NoPublisher(EventPublisher):
    def __init__(self) -> None:
        pass

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        pass


async def test_a_market_buy_is_locked_for_asks_deeper_than_the_snapshot_shows(
    empty_store: SpotStore,
) -> None:
    """The market's snapshot keeps the best `levels` only. A market buy by amount priced from it
    alone locked too little for the asks below them, and got cancelled as slippage after a
    fraction of its amount while the book still had asks at a price within its margin."""
    shallow = [
        limit(f"shallow-{i}", "alice", Side.SELL, f"{100 + i}.00", "0.001") for i in range(3)
    ]
    deep = limit("deep", "alice", Side.SELL, "110.00", "1")
    store = await holding(empty_store, *shallow, deep)
    matcher = MarketMatcher(MARKET, FEES, store, RecordingWallet(), now, levels=3)
    await matcher.recover()
    assert await matcher.apply([locked(o.order_id) for o in (*shallow, deep)]) is not None
    assert len((await store.market_state(MARKET.pair) or {})["asks"]) == 3
    placed = await market_buy(store, "bob", "0.5")

    # 0.001 × (100 + 101 + 102) + 0.497 × 110 = 54.973, plus the 5 % margin, rounded up
    assert placed.lock_amount == Decimal("57.73")
    assert (await matcher.apply([locked(placed.order_id)])) is not None
    bought = await store.get(placed.order_id)
    assert bought is not None
    assert (bought.status, bought.filled_amount) == (Status.FILLED, Decimal("0.5"))


class CountingReads:
    """A store that counts the orders its reads hand out."""

    READS = frozenset(
        {"get", "many", "of_user", "pending_before", "expired", "resting", "resting_sells"}
    )

    def __init__(self, store: SpotStore) -> None:
        self._store = store
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name not in self.READS:
            return method

        async def counted(*args: Any, **kwargs: Any) -> Any:
            found = await method(*args, **kwargs)
            self.read += 1 if isinstance(found, SpotOrder) else len(found or ())
            return found

        return counted


async def test_a_market_buy_beyond_the_snapshot_reads_only_the_asks_it_would_take(
    empty_store: SpotStore,
) -> None:
    """Priced beyond the snapshot's levels, a market buy by amount read every resting order of
    its market, bids included, before its funds were checked: any user could make each request
    read the whole book. It reads the asks, cheapest first, a page at a time, until they hold
    its amount."""
    asks = [limit(f"ask-{i:03}", "alice", Side.SELL, f"{100 + i}.00", "0.001") for i in range(250)]
    bids = [limit(f"bid-{i:03}", "bob", Side.BUY, f"{99 - i}.00", "0.001") for i in range(50)]
    store = await holding(empty_store, *asks, *bids)
    matcher = MarketMatcher(MARKET, FEES, store, RecordingWallet(), now, levels=3)
    await matcher.recover()
    assert await matcher.apply([locked(o.order_id) for o in (*asks, *bids)]) is not None
    counting = CountingReads(store)
    placed = await market_buy(counting, "carol", "0.01")

    # 0.001 × (100 + 101 + … + 109) = 1.045, plus the 5 % margin: 1.09725, rounded up
    assert (placed.status, placed.lock_amount) == (Status.PENDING, Decimal("1.10"))
    assert counting.read <= 200  # one page of asks (the service's default), not the book


async def test_a_market_buy_priced_a_page_at_a_time_takes_the_latest_batch_into_account(
    empty_store: SpotStore,
) -> None:
    """The asks are read a page at a time while a batch waits on the wallet: the ask it filled
    and the one it cancelled count for nothing, the one it filled in part for what is left."""
    asks = [limit(f"ask-{i:02}", "alice", Side.SELL, f"{100 + i}.00", "0.001") for i in range(12)]
    bid = limit("bid", "bob", Side.BUY, "101.00", "0.0015")  # takes ask-00 and half of ask-01
    store = await holding(empty_store, *asks, bid)
    wallet = WaitingOnTheWallet()
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now, levels=1)
    await matcher.recover()
    assert await matcher.apply([locked(o.order_id) for o in asks]) is not None
    cancel = OrderMessage(kind="cancel", order_id="ask-03", pair=MARKET.pair)
    waiting = asyncio.create_task(matcher.apply([locked("bid"), cancel]))
    await wallet.entered.wait()
    counting = CountingReads(store)
    orders = SpotOrders(
        counting,
        NoLocks(),
        NoPublisher(),
        "t.trading.orders",
        FEES,
        now,
        ask_page=2,
    )
    placed = await orders.place(
        "carol",
        pair=MARKET.pair,
        side=Side.BUY,
        type=OrderType.MARKET,
        amount="0.0045",
        price=None,
        quote_amount=None,
    )

    # 0.0005 × 101 + 0.001 × (102 + 104 + 105 + 106) = 0.4675, plus 5 %: 0.490875, rounded up
    assert (placed.status, placed.lock_amount) == (Status.PENDING, Decimal("0.50"))
    assert counting.read <= 1 + 8  # ask-01's price, and four pages of two: to ask-07
    wallet.release.set()
    await waiting


class AnsweringInPart(RecordingWallet):
    """A wallet whose answer to each batch is scripted: False (not every command answered for
    good: slower than the wait, a result lost, a failure it recorded no outcome for) while
    `answers` says so, True after."""

    def __init__(self, *answers: bool) -> None:
        super().__init__()
        self.answers = list(answers)

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        await super().dispatch(batch, market)
        return self.answers.pop(0) if self.answers else True


def ask_and_bid(prefix: str) -> tuple[SpotOrder, SpotOrder]:
    """alice's ask and bob's bid of 0.01 BTC at 100.00: they cross in full."""
    return (
        limit(f"{prefix}-ask", "alice", Side.SELL, "100.00", "0.01"),
        limit(f"{prefix}-bid", "bob", Side.BUY, "100.00", "0.01"),
    )


async def test_a_batch_the_wallet_did_not_answer_in_full_is_sent_again_until_it_is(
    empty_store: SpotStore,
) -> None:
    """Before, a batch was marked sent whatever the wallet answered: a fill whose settlement
    timed out (or failed without an outcome) showed filled, its money never moved, and nothing
    sent it again."""
    store = await holding(empty_store, *ask_and_bid("resend"))
    wallet = AnsweringInPart(False, False)
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now)
    await matcher.recover()
    batch = await matcher.apply([locked("resend-ask"), locked("resend-bid")])
    assert batch is not None
    assert batch.fills

    # shown (the matcher does not hold the market for the wallet), yet unconfirmed
    assert (await store.get("resend-bid")).status is Status.FILLED  # type: ignore[union-attr]
    assert await store.undispatched(MARKET.pair) == [batch]

    assert await matcher.resend_unconfirmed() == 0  # answered in part again: kept
    assert await store.undispatched(MARKET.pair) == [batch]
    assert await matcher.resend_unconfirmed() == 1
    assert await store.undispatched(MARKET.pair) == []
    assert await matcher.resend_unconfirmed() == 0  # nothing left to send
    assert wallet.batches == [batch.batch_id] * 3


async def test_a_resend_pass_takes_a_page_and_the_next_goes_on_after_it(
    empty_store: SpotStore,
) -> None:
    """A batch the wallet never answers in full holds back no other: the passes go round, and
    one after a page that ended on the last batch starts from the oldest again (it sent
    nothing)."""
    asks = [limit(f"page-ask-{n}", "alice", Side.SELL, f"10{n}.00", "0.01") for n in range(4)]
    store = await holding(empty_store, *asks)
    wallet = AnsweringInPart(*[False] * 12)
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now)
    await matcher.recover()
    batches = [await matcher.apply([locked(ask.order_id)]) for ask in asks]
    ids = [b.batch_id for b in batches if b is not None]
    assert len(ids) == 4
    assert wallet.batches == ids
    wallet.batches.clear()

    for _ in range(3):
        assert await matcher.resend_unconfirmed(page=2) == 0
    assert wallet.batches == [*ids, ids[0], ids[1]]


async def test_a_rebuilt_matcher_sends_unconfirmed_batches_again_each_once(
    empty_store: SpotStore,
) -> None:
    """A rebuild sends a batch stored and never sent (a crash before the wallet) before it shows
    it, and only that: the batches shown unconfirmed are left to the consumer's resend passes
    (before, the rebuild sent them again too, and a wallet that is down held each rebuild a wait
    per batch)."""
    store = await holding(empty_store, *ask_and_bid("rebuild"))
    first = MarketMatcher(MARKET, FEES, store, AnsweringInPart(False), now)
    await first.recover()
    shown = await first.apply([locked("rebuild-ask")])
    crashed = MarketMatcher(MARKET, FEES, store, KilledBeforeTheWallet(), now)
    await crashed.recover()
    with pytest.raises(RuntimeError, match="killed"):
        await crashed.apply([locked("rebuild-bid")])
    [shown_again, stored_only] = await store.undispatched(MARKET.pair)
    assert shown is not None
    assert shown_again == shown

    wallet = AnsweringInPart(False)
    rebuilt = MarketMatcher(MARKET, FEES, store, wallet, now)
    await rebuilt.recover()
    assert wallet.batches == [stored_only.batch_id]
    assert (await store.get("rebuild-bid")).status is Status.FILLED  # type: ignore[union-attr]
    assert await store.undispatched(MARKET.pair) == [shown, stored_only]  # still unconfirmed
    assert await rebuilt.resend_unconfirmed() == 2
    assert wallet.batches == [stored_only.batch_id, shown.batch_id, stored_only.batch_id]


class QuietPolls:
    """trading.orders with nothing new: each poll waits its timeout and brings nothing."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(6))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, Any]:
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self) -> None:
        raise AssertionError("nothing was consumed")


@pytest.mark.parametrize(
    ("resend_every", "after_a_rebalance", "unanswered"),
    [(0.2, False, 2), (3600, True, 1)],
    ids=["period", "rebalance"],
)
async def test_the_consumer_sends_unconfirmed_batches_again_between_polls(
    empty_store: SpotStore, resend_every: float, after_a_rebalance: bool, unanswered: int
) -> None:
    """Every `resend_every` seconds (the loop's first pass, at its start, is not answered in
    full either: only a pass a period later confirms the batch), and right after a rebalance
    (whatever the period)."""
    store = await holding(empty_store, *ask_and_bid("loop"))
    wallet = AnsweringInPart(*[False] * unanswered)
    matcher = MarketMatcher(MARKET, FEES, store, wallet, now)
    await matcher.recover()
    batch = await matcher.apply([locked("loop-ask"), locked("loop-bid")])
    assert batch is not None
    consumer = MatcherConsumer(
        "unused",
        "t.trading.orders",
        lambda m: MarketMatcher(m, FEES, store, wallet, now),
        group_id="g",
        resend_every=resend_every,
    )
    consumer._consumer = QuietPolls()
    if after_a_rebalance:
        # the loop's first pass (no market owned yet), then a rebalance hands it every market
        consumer._resend_at = asyncio.get_running_loop().time() + resend_every
        await consumer.take_over(set(range(6)))
    else:
        consumer.matchers = {MARKET.pair: matcher}
    running = asyncio.create_task(consumer._run())
    try:
        for _ in range(100):
            if not await store.undispatched(MARKET.pair):
                break
            await asyncio.sleep(0.05)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert await store.undispatched(MARKET.pair) == []
    assert wallet.batches == [batch.batch_id] * (1 + unanswered)


class HeldWallet(RecordingWallet):
    """A wallet that does not answer until `release` is set (down, or slower than the session)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        await self.release.wait()
        return await super().dispatch(batch, market)


async def test_an_assignment_is_taken_over_by_the_loop_not_the_rebalance_listener(
    empty_store: SpotStore,
) -> None:
    """Rebuilding a market may wait on the wallet (a batch stored and never sent). Before, the
    rebalance listener rebuilt the markets, and no heartbeat goes out while it runs: a wallet
    down for longer than the session timeout got the member evicted at each rebalance."""
    store = await holding(empty_store, *ask_and_bid("assign"))
    crashed = MarketMatcher(MARKET, FEES, store, KilledBeforeTheWallet(), now)
    await crashed.recover()
    with pytest.raises(RuntimeError, match="killed"):
        await crashed.apply([locked("assign-ask"), locked("assign-bid")])
    [stored_only] = await store.undispatched(MARKET.pair)

    wallet = HeldWallet()
    consumer = MatcherConsumer(
        "unused",
        "t.trading.orders",
        lambda m: MarketMatcher(m, FEES, store, wallet, now),
        group_id="g",
    )
    consumer._consumer = QuietPolls()
    listener = _Rebalance(consumer)
    await asyncio.wait_for(
        listener.on_partitions_assigned({TopicPartition("t.trading.orders", p) for p in range(6)}),
        timeout=1,
    )
    assert consumer.matchers == {}  # noted only
    assert not consumer.ready

    running = asyncio.create_task(consumer._run())
    consumer._task = running
    try:
        await asyncio.sleep(0.3)
        assert not consumer.joined.is_set()  # the loop waits on the wallet, not the listener
        wallet.release.set()
        await asyncio.wait_for(consumer.joined.wait(), timeout=10)
        assert consumer.ready
        assert set(consumer.matchers) == set(MARKETS)
        assert wallet.batches == [stored_only.batch_id]
        assert (await store.get("assign-bid")).status is Status.FILLED  # type: ignore[union-attr]
        await listener.on_partitions_revoked(set())
        assert consumer.matchers == {}
        assert not consumer.ready
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


class SlowStates:
    """The store as a rebuild sees it while MongoDB is slow: each market's state waits on
    `release`."""

    def __init__(self, store: SpotStore) -> None:
        self._store = store
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def market_state(self, pair: str) -> Any:
        self.reading.set()
        await self.release.wait()
        return await self._store.market_state(pair)


async def test_a_rebuild_whose_partitions_are_revoked_meanwhile_is_dropped() -> None:
    """The listener runs while the loop's rebuild waits. Before, the rebuild went on after a
    revoke, kept the revoked markets and reported the consumer ready mid-rebalance (and through
    the next assignment's rebuild)."""
    store = SlowStates(MemorySpotStore())
    consumer = MatcherConsumer(
        "unused",
        "t.trading.orders",
        lambda m: MarketMatcher(m, FEES, store, RecordingWallet(), now),  # type: ignore[arg-type]
        group_id="g",
    )
    consumer._consumer = QuietPolls()
    listener = _Rebalance(consumer)
    every = {TopicPartition("t.trading.orders", p) for p in range(6)}
    await listener.on_partitions_assigned(every)
    running = asyncio.create_task(consumer._run())
    consumer._task = running
    try:
        with capture_logs() as logs:
            await asyncio.wait_for(store.reading.wait(), timeout=5)
            await listener.on_partitions_revoked(every)
            store.release.set()
            await asyncio.sleep(0.3)
            assert (consumer.matchers, consumer.ready) == ({}, False)
            assert not [e for e in logs if e["event"] == "spot.markets_owned"]

            await listener.on_partitions_assigned(every)  # the next generation's
            await asyncio.wait_for(consumer.joined.wait(), timeout=10)
        assert consumer.ready
        assert set(consumer.matchers) == set(MARKETS)
        [owned] = [e for e in logs if e["event"] == "spot.markets_owned"]
        assert owned["markets"] == sorted(MARKETS)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
