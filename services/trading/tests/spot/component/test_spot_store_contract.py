"""The spot storage contract (`trading.spot.ports.SpotStore`), run against the in-memory store and
against MongoDB: an order is added once per id and moves only by conditional transitions (a cancel
requested only of an open order of its user, pending → failed once); a market's batch is stored
only right after its last one, so of two matchers appending at one position one learns it lost;
projections never go back; queries filter, order and limit as stated; values come back exact, in
UTC to the millisecond, and as copies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from bson import Decimal128
from pymongo import AsyncMongoClient

from shared.messaging import CommandResult
from shared.testing.fixtures import unique_database_name
from trading.errors import Conflict
from trading.messaging import EventPublisher
from trading.spot.adapters.memory import MemorySpotStore
from trading.spot.adapters.mongo import MongoSpotStore
from trading.spot.domain.book import Fill, OrderChange, OrderType, Side, Status
from trading.spot.domain.markets import MARKETS, Fees, Market
from trading.spot.orders import OPEN_STATUSES, OrderFill, SpotBatch, SpotOrder
from trading.spot.ports import SpotStore
from trading.spot.service import SpotOrders
from trading.spot.wallet import SpotWallet
from trading.testing import FakeClock

D = Decimal
MARKET = MARKETS["BTC-GBP"]
OTHER = MARKETS["ETH-GBP"]
T0 = FakeClock().now  # whole seconds: what both stores keep as it is
MS = timedelta(milliseconds=1)
CLOSED = (Status.FILLED, Status.CANCELLED, Status.FAILED)


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.integration)])
def bare_store(request: pytest.FixtureRequest) -> SpotStore:
    """Sync on purpose: the MongoDB fixtures are pulled only by its variant."""
    if request.param == "memory":
        return MemorySpotStore()
    client: AsyncMongoClient[dict[str, Any]] = request.getfixturevalue("mongo_client")
    return MongoSpotStore(client[unique_database_name(f"spot_{request.node.originalname}")])


@pytest_asyncio.fixture
async def store(bare_store: SpotStore) -> AsyncIterator[SpotStore]:
    if not isinstance(bare_store, MongoSpotStore):
        yield bare_store
        return
    await bare_store.ensure_indexes()
    database = bare_store._orders.database
    try:
        yield bare_store
    finally:
        await database.client.drop_database(database.name)


def order(
    order_id: str,
    user: str = "amy",
    side: Side = Side.SELL,
    price: str = "100.00",
    amount: str = "0.01",
    **changes: Any,
) -> SpotOrder:
    """A limit order of BTC-GBP, pending, created at T0, holding what it locks."""
    steps = MARKET.steps(D(amount))
    ticks = MARKET.ticks(D(price))
    hold = MARKET.base_units(steps) if side is Side.SELL else MARKET.quote_ceil(ticks, steps)
    currency = MARKET.base if side is Side.SELL else MARKET.quote
    placed = SpotOrder(
        order_id=order_id,
        user_id=user,
        pair=MARKET.pair,
        side=side,
        type=OrderType.LIMIT,
        price=D(price),
        amount=D(amount),
        quote_amount=None,
        lock_currency=currency.code,
        lock_amount=D(hold).scaleb(-currency.scale),
        created_at=T0,
        remaining=steps,
        hold=hold,
    )
    return replace(placed, **changes)


def change(
    order_id: str,
    status: Status,
    *,
    user: str = "amy",
    side: Side = Side.SELL,
    filled: int = 0,
    remaining: int | None = 1000,
    hold: int = 1_000_000,
    released: int = 0,
    sequence: int = 1,
    reason: str | None = None,
) -> OrderChange:
    return OrderChange(
        order_id, user, side, status, reason, filled, remaining, hold, released, sequence
    )


def trade(trade_id: str, buy: str, sell: str, *, ticks: int = 10_000, steps: int = 1000) -> Fill:
    """`buy` takes `steps` from `sell` at `ticks` (bob buys from amy)."""
    return Fill(
        trade_id,
        2,
        ticks,
        steps,
        MARKET.base_units(steps),
        MARKET.quote_floor(ticks, steps),
        buy,
        sell,
        "bob",
        "amy",
        Side.BUY,
        2000,
        1,
    )


def batch(
    first: int,
    last: int | None = None,
    *,
    pair: str = MARKET.pair,
    fills: list[Fill] | None = None,
    changes: list[OrderChange] | None = None,
    bids: list[tuple[int, int]] | None = None,
    asks: list[tuple[int, int]] | None = None,
) -> SpotBatch:
    return SpotBatch(
        pair,
        first,
        first if last is None else last,
        fills or [],
        changes if changes is not None else [change(f"o-{first}", Status.OPEN, sequence=first)],
        bids or [],
        asks or [],
    )


async def add_all(store: SpotStore, *orders: SpotOrder) -> None:
    for each in orders:
        assert await store.add(each) is each


async def read(store: SpotStore, order_id: str) -> SpotOrder:
    found = await store.get(order_id)
    assert found is not None
    return found


def ids(orders: list[SpotOrder]) -> list[str]:
    return [o.order_id for o in orders]


# Orders: added once per id


async def test_an_order_is_added_and_read_back(store: SpotStore) -> None:
    placed = order("o-1", client_order_id="c-1", expires_at=T0 + timedelta(hours=1))
    assert await store.add(placed) is placed  # the order given, not read back
    assert await read(store, "o-1") == replace(placed, updated_at=T0)
    assert await store.many(["o-1"]) == {"o-1": replace(placed, updated_at=T0)}


async def test_an_order_id_is_added_once_whatever_the_second_body_says(store: SpotStore) -> None:
    first = order("o-1", client_order_id="c-1")
    await add_all(store, first)
    assert await store.add(order("o-1", client_order_id="c-1")) is None  # the same body
    other = order("o-1", "bob", Side.BUY, "99.00", "0.02", client_order_id="c-1")
    assert await store.add(other) is None  # a different one
    assert await read(store, "o-1") == replace(first, updated_at=T0)
    assert len(await store.of_user("amy", Status)) == 1
    assert await store.of_user("bob", Status) == []


async def test_of_racing_adds_of_one_id_one_is_stored(store: SpotStore) -> None:
    bodies = [order("o-1", amount=f"0.0{n}") for n in range(1, 6)]
    answers = await asyncio.gather(*(store.add(b) for b in bodies))
    [winner] = [a for a in answers if a is not None]
    assert sum(a is None for a in answers) == 4
    assert await read(store, "o-1") == replace(winner, updated_at=T0)


async def test_unknown_orders_are_not_found(store: SpotStore) -> None:
    await add_all(store, order("o-1"), order("o-2"))
    assert await store.get("o-3") is None
    assert await store.many([]) == {}
    found = await store.many(iter(["o-2", "o-3", "o-2"]))
    assert list(found) == ["o-2"]
    assert found["o-2"].order_id == "o-2"


async def test_amounts_and_prices_come_back_exact(store: SpotStore) -> None:
    """Amounts exact without trailing zeros, prices with the decimals they were given, integers
    of units at any size."""
    big = order(
        "o-1",
        amount="0.01000",
        price="100.00",
        lock_amount=D("123456789012345678.123456789012345678"),  # 36 significant digits
        quote_amount=D("0.000000000000000001"),
        filled_amount=D("0.00500"),
        hold=10**40 + 1,
        remaining=10**30 + 7,
        fills=[OrderFill("t-1", D("100.00"), D("0.0050"), D("0.00001000"), "BTC", "maker")],
    )
    await add_all(store, big)
    kept = await read(store, "o-1")
    assert (str(kept.amount), str(kept.price), str(kept.filled_amount)) == (
        "0.01",
        "100.00",
        "0.005",
    )
    assert kept.lock_amount == D("123456789012345678.123456789012345678")
    assert format(kept.quote_amount, "f") == "0.000000000000000001"
    assert (kept.hold, kept.remaining) == (10**40 + 1, 10**30 + 7)
    [fill] = kept.fills
    assert (str(fill.price), str(fill.amount), str(fill.fee)) == ("100.00", "0.005", "0.00001")


async def test_instants_are_kept_in_utc_to_the_millisecond(store: SpotStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2026, 11, 30, 14, 0, 0, 123987, tzinfo=plus_two)
    expires = datetime(2026, 11, 30, 13, 0, 0, 999999)  # naive: taken as UTC
    await add_all(store, order("o-1", created_at=created, expires_at=expires))
    kept = await read(store, "o-1")
    assert kept.created_at == datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)
    assert kept.updated_at == kept.created_at
    assert kept.expires_at == datetime(2026, 11, 30, 13, 0, 0, 999000, tzinfo=UTC)
    assert all(t.utcoffset() == timedelta(0) for t in (kept.created_at, kept.expires_at))
    asked = await store.request_cancel("o-1", "amy", datetime(2026, 12, 1, 1, 0, 0, 1500, plus_two))
    assert asked is not None
    assert asked.updated_at == datetime(2026, 11, 30, 23, 0, 0, 1000, tzinfo=UTC)
    assert await store.fail_pending("o-1", "amy", "insufficient_funds", T0 + timedelta(0, 0, 1999))
    assert (await read(store, "o-1")).updated_at == T0 + MS


# Orders: reading


async def test_a_users_orders_newest_first(store: SpotStore) -> None:
    await add_all(
        store,
        order("second", created_at=T0 + timedelta(seconds=2)),
        order("first", created_at=T0 + timedelta(seconds=1)),
        order("third", created_at=T0 + timedelta(seconds=3), status=Status.OPEN),
        order("a-ms-later", created_at=T0 + timedelta(seconds=3) + MS, status=Status.FILLED),
        order("bobs", "bob", created_at=T0 + timedelta(seconds=9)),
    )
    assert ids(await store.of_user("amy", Status)) == ["a-ms-later", "third", "second", "first"]
    assert ids(await store.of_user("amy", OPEN_STATUSES)) == ["third", "second", "first"]
    assert ids(await store.of_user("amy", [Status.FILLED, Status.FAILED])) == ["a-ms-later"]
    assert ids(await store.of_user("amy", Status, limit=2)) == ["a-ms-later", "third"]
    assert await store.of_user("amy", []) == []
    assert await store.of_user("nobody", Status) == []


async def test_a_users_open_orders_are_counted(store: SpotStore) -> None:
    await add_all(
        store,
        order("pending"),
        order("open", status=Status.OPEN),
        order("partly", status=Status.PARTIALLY_FILLED),
        order("filled", status=Status.FILLED),
        order("cancelled", status=Status.CANCELLED),
        order("failed", status=Status.FAILED),
        order("bobs", "bob", status=Status.OPEN),
    )
    assert await store.open_count("amy") == 3
    assert await store.open_count("bob") == 1
    assert await store.open_count("nobody") == 0
    assert await store.fail_pending("pending", "amy", "insufficient_funds", T0)
    assert await store.open_count("amy") == 2


async def test_a_users_orders_come_newest_first_a_page_at_a_time(store: SpotStore) -> None:
    """(created_at, order_id) descending, whatever order they were added in, and `before` goes on
    right after an order a page ended with, including past others of the same millisecond."""
    second = T0 + timedelta(seconds=1)
    await add_all(
        store,
        order("b1", created_at=second),
        order("a", created_at=T0),
        order("c", created_at=T0 + timedelta(seconds=2), status=Status.OPEN),
        order("b2", created_at=second + timedelta(microseconds=300)),  # the same ms as b1
        order("b3", created_at=second, status=Status.FILLED),
        order("bobs", "bob", created_at=second),
    )
    assert ids(await store.of_user("amy", Status)) == ["c", "b3", "b2", "b1", "a"]
    first = await store.of_user("amy", Status, limit=2)
    assert ids(first) == ["c", "b3"]
    after_b3 = (first[-1].created_at, first[-1].order_id)
    page = await store.of_user("amy", Status, limit=2, before=after_b3)
    assert ids(page) == ["b2", "b1"]
    rest = await store.of_user("amy", Status, limit=2, before=(page[-1].created_at, "b1"))
    assert ids(rest) == ["a"]
    assert await store.of_user("amy", Status, before=(rest[0].created_at, "a")) == []
    # the statuses still hold on a later page, and an order placed since is on none of them
    await add_all(store, order("newer", created_at=T0 + timedelta(seconds=3)))
    assert ids(await store.of_user("amy", OPEN_STATUSES, before=after_b3)) == ["b2", "b1", "a"]
    # a position no stored order has (one that left the list) goes on from where it was
    between = (second + timedelta(microseconds=900), "b15")
    assert ids(await store.of_user("amy", Status, before=between)) == ["b1", "a"]


async def test_pending_orders_created_before_an_instant(store: SpotStore) -> None:
    await add_all(
        store,
        order("early", created_at=T0),
        order("later", created_at=T0 + timedelta(seconds=10)),
        order("at-cutoff", created_at=T0 + timedelta(seconds=30)),
        order("open", created_at=T0, status=Status.OPEN),
        order("failed", created_at=T0, status=Status.FAILED),
    )
    cutoff = T0 + timedelta(seconds=30)
    assert sorted(ids(await store.pending_before(cutoff))) == ["early", "later"]
    assert len(await store.pending_before(cutoff, limit=1)) == 1
    assert sorted(ids(await store.pending_before(cutoff, limit=0))) == ["early", "later"]
    assert await store.pending_before(T0) == []


async def test_pending_orders_come_oldest_first_a_page_at_a_time(store: SpotStore) -> None:
    """(created_at, order_id) order, whatever order they were added in, and `after` goes on
    right after an order a page ended with, including past others of the same millisecond."""
    await add_all(
        store,
        order("c", created_at=T0 + timedelta(seconds=2)),
        order("b2", created_at=T0 + timedelta(seconds=1)),
        order("a", created_at=T0),
        order("b1", created_at=T0 + timedelta(seconds=1, microseconds=300)),  # same ms as b2
        order("d", created_at=T0 + timedelta(seconds=3)),
        order("open", created_at=T0, status=Status.OPEN),
    )
    cutoff = T0 + timedelta(minutes=1)
    assert ids(await store.pending_before(cutoff)) == ["a", "b1", "b2", "c", "d"]
    first = await store.pending_before(cutoff, limit=2)
    assert ids(first) == ["a", "b1"]
    last = first[-1]
    second = await store.pending_before(cutoff, limit=2, after=(last.created_at, last.order_id))
    assert ids(second) == ["b2", "c"]
    last = second[-1]
    rest = await store.pending_before(cutoff, limit=2, after=(last.created_at, last.order_id))
    assert ids(rest) == ["d"]
    assert await store.pending_before(cutoff, after=(rest[0].created_at, "d")) == []
    # the cutoff still holds on a later page
    early = T0 + timedelta(seconds=2)
    assert ids(await store.pending_before(early, after=(second[0].created_at, "b2"))) == []


async def test_a_pending_order_whose_lock_was_sent_again_is_found_once_that_was_before(
    store: SpotStore,
) -> None:
    await add_all(store, order("asked"), order("open", status=Status.OPEN))
    asked_at = T0 + timedelta(seconds=30)
    await store.mark_asked("asked", asked_at)
    await store.mark_asked("open", asked_at)  # not pending: untouched
    await store.mark_asked("missing", asked_at)  # nothing to mark
    assert await store.pending_before(asked_at) == []
    [found] = await store.pending_before(asked_at + MS)
    assert (found.order_id, found.updated_at) == ("asked", T0)
    assert await store.get("missing") is None


async def test_created_before_is_compared_to_the_millisecond(store: SpotStore) -> None:
    await add_all(store, order("o-1", created_at=T0 + timedelta(microseconds=200)))
    assert await store.pending_before(T0 + timedelta(microseconds=900)) == []
    assert ids(await store.pending_before(T0 + MS)) == ["o-1"]


async def test_open_orders_past_their_expiry(store: SpotStore) -> None:
    due = T0 + timedelta(minutes=5)
    await add_all(
        store,
        order("open-due", status=Status.OPEN, expires_at=due),
        order("partial-due", status=Status.PARTIALLY_FILLED, expires_at=due - timedelta(days=1)),
        order("same-ms", status=Status.OPEN, expires_at=due + timedelta(microseconds=999)),
        order("next-ms", status=Status.OPEN, expires_at=due + MS),
        order("no-expiry", status=Status.OPEN),
        order("pending-due", expires_at=due),
        order("filled-due", status=Status.FILLED, expires_at=due),
        order("cancelled-due", status=Status.CANCELLED, expires_at=due),
    )
    assert ids(await store.expired(due)) == ["partial-due", "open-due", "same-ms"]
    first = await store.expired(due, limit=2)
    assert ids(first) == ["partial-due", "open-due"]
    last = first[-1]
    assert last.expires_at is not None
    assert ids(await store.expired(due, after=(last.expires_at, last.order_id))) == ["same-ms"]
    assert await store.expired(due, after=(due + MS, "")) == []
    assert await store.expired(due - timedelta(days=2)) == []


async def test_an_expired_order_whose_cancel_was_sent_is_found_again_once_that_was_before(
    store: SpotStore,
) -> None:
    due = T0 + timedelta(minutes=5)
    await add_all(
        store,
        order("sent", status=Status.OPEN, expires_at=due),
        order("unsent", status=Status.OPEN, expires_at=due),
    )
    sent_at = due + timedelta(seconds=1)
    await store.mark_cancel_sent("sent", sent_at)
    assert ids(await store.expired(sent_at, cancelled_before=sent_at)) == ["unsent"]
    assert ids(await store.expired(sent_at, cancelled_before=sent_at + MS)) == ["sent", "unsent"]
    assert ids(await store.expired(sent_at)) == ["sent", "unsent"]  # no period: every one
    stored = await store.get("sent")
    assert stored is not None
    assert stored.updated_at == T0


async def test_orders_expired_at_the_same_instant_come_by_id_a_page_after_another(
    store: SpotStore,
) -> None:
    due = T0 + timedelta(minutes=5)
    await add_all(
        store, *(order(i, status=Status.OPEN, expires_at=due) for i in ("e-c", "e-a", "e-b"))
    )
    first = await store.expired(due, limit=2)
    assert ids(first) == ["e-a", "e-b"]
    assert ids(await store.expired(due, limit=2, after=(due, "e-b"))) == ["e-c"]


async def test_resting_orders_of_a_market_in_time_priority(store: SpotStore) -> None:
    await add_all(
        store,
        order("seq-5", status=Status.OPEN, book_sequence=5),
        order("seq-2", status=Status.PARTIALLY_FILLED, book_sequence=2),
        order("seq-9", side=Side.BUY, status=Status.OPEN, book_sequence=9),
        order("no-seq", status=Status.OPEN),
        order("pending", book_sequence=1),
        order("filled", status=Status.FILLED, book_sequence=3),
        order("cancelled", status=Status.CANCELLED, book_sequence=4),
        order("eth", pair=OTHER.pair, status=Status.OPEN, book_sequence=1),
    )
    assert ids(await store.resting(MARKET.pair)) == ["no-seq", "seq-2", "seq-5", "seq-9"]
    assert ids(await store.resting(OTHER.pair)) == ["eth"]
    assert await store.resting("ETH-BTC") == []


async def test_resting_sells_of_a_market_cheapest_first_a_page_at_a_time(
    store: SpotStore,
) -> None:
    """By price as a number ("9.00" before "10.00"), then time priority; buys, orders not resting,
    another market's and an order never rested (no book_sequence) are not among them."""
    await add_all(
        store,
        order("100-late", price="100.00", status=Status.OPEN, book_sequence=7),
        order("10", price="10.00", status=Status.PARTIALLY_FILLED, book_sequence=9),
        order("100-early", price="100.00", status=Status.OPEN, book_sequence=3),
        order("9", price="9.00", status=Status.OPEN, book_sequence=8),
        order("100-middle", price="100.00", status=Status.PARTIALLY_FILLED, book_sequence=5),
        order("11", price="11.00", status=Status.OPEN, book_sequence=1),
        order("buy", side=Side.BUY, price="1.00", status=Status.OPEN, book_sequence=2),
        order("pending", price="1.00", book_sequence=4),
        order("filled", price="1.00", status=Status.FILLED, book_sequence=6),
        order("no-seq", price="1.00", status=Status.OPEN),
        order("eth", pair=OTHER.pair, price="1.00", status=Status.OPEN, book_sequence=10),
    )
    everything = ["9", "10", "11", "100-early", "100-middle", "100-late"]
    assert ids(await store.resting_sells(MARKET.pair)) == everything
    pages, after = [], None
    while page := await store.resting_sells(MARKET.pair, limit=2, after=after):
        pages.append(ids(page))
        last = page[-1]
        assert last.price is not None
        assert last.book_sequence is not None
        after = (last.price, last.book_sequence)
    assert pages == [["9", "10"], ["11", "100-early"], ["100-middle", "100-late"]]
    # a position compares by value: 100 is 100.00
    assert ids(await store.resting_sells(MARKET.pair, after=(D(100), 3))) == everything[4:]
    assert ids(await store.resting_sells(OTHER.pair)) == ["eth"]
    assert await store.resting_sells("ETH-BTC") == []


@pytest.mark.integration
async def test_open_orders_stored_before_the_price_number_are_given_it(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    """MongoDB only: orders an earlier version stored have no `price_number`, so a resting sell
    among them would be missing from the page; starting up gives the open ones theirs."""
    database = mongo_client[unique_database_name("spot_price_number")]
    store = MongoSpotStore(database)
    try:
        await store.ensure_indexes()
        await add_all(
            store,
            order("new", price="10.00", status=Status.OPEN, book_sequence=2),
            order("old", price="9.00", status=Status.OPEN, book_sequence=1),
            order("old-pending", price="8.00"),
            order("old-filled", price="7.00", status=Status.FILLED, book_sequence=3),
        )
        stored_before = {"_id": {"$in": ["old", "old-pending", "old-filled"]}}
        await database["spot_orders"].update_many(stored_before, {"$unset": {"price_number": ""}})
        assert ids(await store.resting_sells(MARKET.pair)) == ["new"]

        await store.ensure_indexes()
        assert ids(await store.resting_sells(MARKET.pair)) == ["old", "new"]
        given = {
            doc["_id"]: doc.get("price_number")
            async for doc in database["spot_orders"].find(stored_before)
        }
        assert given == {
            "old": Decimal128("9.00"),
            "old-pending": Decimal128("8.00"),
            "old-filled": None,
        }
    finally:
        await mongo_client.drop_database(database.name)


# Orders: conditional transitions


@pytest.mark.parametrize("status", sorted(OPEN_STATUSES))
async def test_a_cancel_is_requested_of_an_open_order_of_its_user(
    store: SpotStore, status: Status
) -> None:
    await add_all(store, order("o-1", status=status))
    at = T0 + timedelta(seconds=5)
    asked = await store.request_cancel("o-1", "amy", at)
    expected = replace(order("o-1", status=status), cancel_requested=True, updated_at=at)
    assert asked == expected
    assert await read(store, "o-1") == expected  # flagged, not cancelled: the matcher does that


@pytest.mark.parametrize("status", CLOSED)
async def test_no_cancel_is_requested_of_a_closed_order(store: SpotStore, status: Status) -> None:
    await add_all(store, order("o-1", status=status, reason="any"))
    assert await store.request_cancel("o-1", "amy", T0 + timedelta(seconds=5)) is None
    assert await read(store, "o-1") == replace(
        order("o-1", status=status, reason="any"), updated_at=T0
    )


async def test_no_cancel_is_requested_of_another_users_or_an_unknown_order(
    store: SpotStore,
) -> None:
    await add_all(store, order("o-1", status=Status.OPEN))
    assert await store.request_cancel("o-1", "mallory", T0 + timedelta(seconds=5)) is None
    assert await store.request_cancel("o-2", "amy", T0 + timedelta(seconds=5)) is None
    kept = await read(store, "o-1")
    assert (kept.cancel_requested, kept.updated_at) == (False, T0)
    assert await store.get("o-2") is None


async def test_a_second_cancel_request_flags_the_open_order_again(store: SpotStore) -> None:
    await add_all(store, order("o-1", status=Status.OPEN))
    first = await store.request_cancel("o-1", "amy", T0 + timedelta(seconds=1))
    second = await store.request_cancel("o-1", "amy", T0 + timedelta(seconds=2))
    assert first is not None
    assert second is not None
    assert (first.cancel_requested, second.cancel_requested) == (True, True)
    assert second.updated_at == T0 + timedelta(seconds=2)
    racing = await asyncio.gather(
        *(store.request_cancel("o-1", "amy", T0 + timedelta(seconds=3)) for _ in range(3))
    )
    assert all(r is not None and r.cancel_requested for r in racing)
    kept = await read(store, "o-1")
    assert (kept.status, kept.updated_at) == (Status.OPEN, T0 + timedelta(seconds=3))


async def test_a_pending_order_fails_once(store: SpotStore) -> None:
    await add_all(store, order("o-1"))
    at = T0 + timedelta(seconds=1)
    assert await store.fail_pending("o-1", "amy", "insufficient_funds", at) is True
    assert await store.fail_pending("o-1", "amy", "other", at + timedelta(seconds=1)) is False
    expected = replace(order("o-1"), status=Status.FAILED, reason="insufficient_funds")
    assert await read(store, "o-1") == replace(expected, updated_at=at)
    assert await store.request_cancel("o-1", "amy", at) is None  # failed: closed


async def test_of_racing_failures_of_a_pending_order_one_wins(store: SpotStore) -> None:
    await add_all(store, order("o-1"))
    reasons = [f"reason-{n}" for n in range(5)]
    outcomes = await asyncio.gather(*(store.fail_pending("o-1", "amy", r, T0) for r in reasons))
    assert outcomes.count(True) == 1
    kept = await read(store, "o-1")
    assert (kept.status, kept.reason) == (Status.FAILED, reasons[outcomes.index(True)])


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.PENDING])
async def test_only_a_pending_order_fails(store: SpotStore, status: Status) -> None:
    await add_all(store, order("o-1", status=status))
    assert await store.fail_pending("o-1", "amy", "insufficient_funds", T0 + MS) is False
    assert await read(store, "o-1") == replace(order("o-1", status=status), updated_at=T0)


async def test_only_the_orders_own_user_fails_it(store: SpotStore) -> None:
    await add_all(store, order("o-1"))
    assert await store.fail_pending("o-1", "mallory", "idempotency_conflict", T0 + MS) is False
    assert await store.fail_pending("o-2", "amy", "insufficient_funds", T0 + MS) is False
    assert (await read(store, "o-1")).status is Status.PENDING
    assert await store.get("o-2") is None


async def test_a_cancel_request_and_a_failure_racing_end_failed(store: SpotStore) -> None:
    await add_all(store, order("o-1"))
    asked, failed = await asyncio.gather(
        store.request_cancel("o-1", "amy", T0 + MS),
        store.fail_pending("o-1", "amy", "insufficient_funds", T0 + MS),
    )
    assert failed is True
    kept = await read(store, "o-1")
    assert (kept.status, kept.reason) == (Status.FAILED, "insufficient_funds")
    assert kept.cancel_requested is (asked is not None)  # flagged only if it came first


# Batches: the fence


async def test_a_batch_number_is_taken_once(store: SpotStore) -> None:
    ours = batch(1, 2, changes=[change("o-1", Status.OPEN, sequence=2)])
    theirs = batch(1, 3, changes=[change("o-2", Status.OPEN, sequence=3)])
    assert await store.add_batch(ours, T0) is True
    assert await store.add_batch(ours, T0 + timedelta(seconds=1)) is True  # a lost answer: ours
    assert await store.add_batch(theirs, T0) is False  # other decisions under 1: fenced
    assert await store.add_batch(replace(ours, asks=[(10_000, 1)]), T0) is False
    assert await store.batches_after(MARKET.pair, 0) == [ours]
    assert await store.last_sequence(MARKET.pair) == 2


async def test_of_two_matchers_writing_one_number_one_learns_it_lost(store: SpotStore) -> None:
    owner = batch(1, 2, changes=[change("bid-1", Status.FILLED, side=Side.BUY, sequence=2)])
    stale = batch(1, 2, changes=[change("bid-2", Status.FILLED, side=Side.BUY, sequence=2)])
    outcomes = await asyncio.gather(store.add_batch(owner, T0), store.add_batch(stale, T0))
    assert sorted(outcomes) == [False, True]
    winner = owner if outcomes[0] else stale
    assert await store.undispatched(MARKET.pair) == [winner]
    # the loser rebuilds from the store and decides again after the winner's batch
    assert await store.last_sequence(MARKET.pair) == 2
    assert await store.add_batch(batch(3), T0) is True


async def test_a_batch_stored_by_racing_retries_is_ours_for_each(store: SpotStore) -> None:
    ours = batch(1)
    assert await asyncio.gather(*(store.add_batch(ours, T0) for _ in range(3))) == [True] * 3
    assert await store.batches_after(MARKET.pair, 0) == [ours]


async def test_a_number_is_taken_per_market(store: SpotStore) -> None:
    assert await store.add_batch(batch(1), T0) is True
    assert await store.add_batch(batch(1, pair=OTHER.pair), T0) is True
    assert await store.last_sequence(OTHER.pair) == 1


async def test_a_batch_is_stored_only_right_after_the_markets_last(store: SpotStore) -> None:
    """A batch must start at the number after the market's highest `last` (1 for a market without
    batches): not after a gap, not inside or over a stored batch's numbers. A refused batch stores
    nothing; a batch already stored with the same decisions is still told it won."""
    assert await store.add_batch(batch(2), T0) is False  # the market's first batch starts at 1
    assert await store.add_batch(batch(0, 1), T0) is False
    first = batch(1, 3)
    assert await store.add_batch(first, T0) is True
    refused = [
        batch(5),  # after a gap
        batch(2, 4),  # overlaps 2..3 under another number
        batch(3),  # the last number again
        batch(2, 2),  # inside 1..3
        batch(1, 4),  # the first number again, with other decisions
    ]
    for each in refused:
        assert await store.add_batch(each, T0) is False, each
    second = batch(4, 6)
    assert await store.add_batch(second, T0) is True
    assert await store.add_batch(first, T0 + timedelta(seconds=1)) is True  # a lost answer: ours
    assert await store.add_batch(second, T0 + timedelta(seconds=1)) is True
    assert await store.batches_after(MARKET.pair, 0) == [first, second]
    assert await store.undispatched(MARKET.pair) == [first, second]
    assert await store.last_sequence(MARKET.pair) == 6
    # per market: another market's numbers are its own
    assert await store.add_batch(batch(7, pair=OTHER.pair), T0) is False
    assert await store.add_batch(batch(1, 2, pair=OTHER.pair), T0) is True
    assert await store.add_batch(batch(7), T0) is True


async def test_of_matchers_racing_to_follow_one_batch_one_appends(store: SpotStore) -> None:
    """Two matchers of one market (or one racing its own restart) whose books disagree: of the
    batches racing to follow the market's last one, whatever their first numbers, one is stored,
    and every later batch follows that one."""
    assert await store.add_batch(batch(1, 2), T0) is True
    racing = [
        batch(3, 4, changes=[change("bid-1", Status.FILLED, side=Side.BUY, sequence=4)]),
        batch(3, 5, changes=[change("bid-2", Status.FILLED, side=Side.BUY, sequence=5)]),
        batch(4, 6, changes=[change("bid-3", Status.FILLED, side=Side.BUY, sequence=6)]),
        batch(7, 9, changes=[change("bid-4", Status.FILLED, side=Side.BUY, sequence=9)]),
    ]
    outcomes = await asyncio.gather(*(store.add_batch(b, T0) for b in racing))
    assert outcomes.count(True) == 1
    [winner] = [b for b, won in zip(racing, outcomes, strict=True) if won]
    assert winner.first == 3
    assert [b.last for b in await store.batches_after(MARKET.pair, 0)] == [2, winner.last]
    assert await store.last_sequence(MARKET.pair) == winner.last
    # the losers rebuild from the store and decide again after the winner's batch
    for loser in (b for b in racing if b is not winner):
        assert await store.add_batch(loser, T0) is False
    assert await store.add_batch(batch(winner.last + 1), T0) is True


async def test_sequence_numbers_beyond_int64_are_refused(store: SpotStore) -> None:
    assert await store.add_batch(batch(1, 2**63 - 2), T0) is True
    with pytest.raises(OverflowError):
        await store.add_batch(batch(2**63 - 1, 2**63), T0)
    assert await store.last_sequence(MARKET.pair) == 2**63 - 2
    with pytest.raises(OverflowError):
        await store.add(order("o-1", status=Status.OPEN, book_sequence=2**63))
    assert await store.get("o-1") is None
    assert await store.add_batch(batch(2**63 - 1), T0) is True


# Batches: reading


async def test_a_batch_comes_back_exact(store: SpotStore) -> None:
    huge = Fill(
        "t-1", 3, 10**20, 10**25, 10**28, 10**30, "b", "s", "bob", "amy", Side.SELL, 10**19, 1
    )
    kept = batch(
        1,
        7,
        fills=[trade("t-0", "b", "s"), huge],
        changes=[
            change("b", Status.FILLED, side=Side.BUY, remaining=None, hold=0, released=10**30),
            change("s", Status.PARTIALLY_FILLED, filled=10**25, reason=None, sequence=2),
            change("x", Status.CANCELLED, reason="self_trade", sequence=7),
        ],
        bids=[(9_999, 10**24), (9_000, 1)],
        asks=[(10**21, 5)],
    )
    assert await store.add_batch(kept, T0) is True
    assert await store.batches_after(MARKET.pair, 0) == [kept]
    assert await store.undispatched(MARKET.pair) == [kept]


async def test_batches_after_a_sequence_by_last(store: SpotStore) -> None:
    for each in (batch(1), batch(1, 3, pair=OTHER.pair), batch(2, 4), batch(5)):
        assert await store.add_batch(each, T0) is True

    async def lasts(sequence: int) -> list[int]:
        return [b.last for b in await store.batches_after(MARKET.pair, sequence)]

    assert await lasts(0) == [1, 4, 5]
    assert await lasts(1) == [4, 5]
    assert await lasts(3) == [4, 5]  # 2..4 goes past 3
    assert await lasts(5) == []
    assert [b.last for b in await store.batches_after(OTHER.pair, 0)] == [3]
    assert await store.batches_after("ETH-BTC", 0) == []


async def test_batches_are_undispatched_until_marked(store: SpotStore) -> None:
    for each in (batch(1), batch(2), batch(1, pair=OTHER.pair), batch(3)):
        assert await store.add_batch(each, T0) is True
    assert [b.first for b in await store.undispatched(MARKET.pair)] == [1, 2, 3]
    await store.mark_dispatched(batch(2))
    await store.mark_dispatched(batch(2))  # again: still dispatched
    assert [b.first for b in await store.undispatched(MARKET.pair)] == [1, 3]
    # marked by id: the batch stored under it, whatever the given one decided
    await store.mark_dispatched(batch(1, changes=[change("other", Status.OPEN)]))
    assert [b.first for b in await store.undispatched(MARKET.pair)] == [3]
    await store.mark_dispatched(batch(8))  # never stored: nothing is
    assert await store.last_sequence(MARKET.pair) == 3
    assert len(await store.undispatched(OTHER.pair)) == 1
    assert [b.first for b in await store.batches_after(MARKET.pair, 0)] == [1, 2, 3]


async def test_undispatched_batches_are_read_a_page_at_a_time(store: SpotStore) -> None:
    for first in range(1, 7):
        assert await store.add_batch(batch(first), T0) is True
    await store.mark_dispatched(batch(2))
    await store.mark_dispatched(batch(5))

    async def page(after: int, limit: int | None) -> list[int]:
        return [b.last for b in await store.undispatched(MARKET.pair, after=after, limit=limit)]

    assert await page(0, 2) == [1, 3]
    assert await page(3, 2) == [4, 6]
    assert await page(6, 2) == []
    assert await page(1, None) == [3, 4, 6]
    assert await page(1, 0) == [3, 4, 6]  # no limit


async def test_the_last_sequence_of_a_market(store: SpotStore) -> None:
    assert await store.last_sequence(MARKET.pair) == 0
    for each in (batch(1, 4), batch(5, 6), batch(1, 9, pair=OTHER.pair)):
        assert await store.add_batch(each, T0) is True
    assert await store.last_sequence(MARKET.pair) == 6
    assert await store.last_sequence(OTHER.pair) == 9


# Projection


def crossing() -> tuple[SpotOrder, SpotOrder, SpotBatch]:
    """amy's ask rests (batch 1..2), bob's bid takes half of it (3..5)."""
    ask = order("ask", status=Status.OPEN, book_sequence=2, amount="0.02")
    bid = order("bid", "bob", Side.BUY, price="101.00")
    fill = trade("t-4", "bid", "ask")
    decided = batch(
        3,
        5,
        fills=[fill],
        changes=[
            change("ask", Status.PARTIALLY_FILLED, filled=1000, remaining=1000, sequence=2),
            change(
                "bid",
                Status.FILLED,
                user="bob",
                side=Side.BUY,
                filled=1000,
                remaining=0,
                hold=0,
                released=1,
                sequence=5,
            ),
        ],
        bids=[(9_900, 500), (9_800, 1_000_000)],
        asks=[(10_000, 1000)],
    )
    return ask, bid, decided


async def test_a_projection_moves_its_orders_and_its_market(store: SpotStore) -> None:
    ask, bid, decided = crossing()
    await add_all(store, ask, bid, order("bystander", status=Status.OPEN, book_sequence=1))
    assert await store.market_state(MARKET.pair) is None
    at = T0 + timedelta(seconds=1)
    await store.project(decided, MARKET, at)

    kept_ask, kept_bid = await read(store, "ask"), await read(store, "bid")
    assert kept_ask == replace(
        ask,
        status=Status.PARTIALLY_FILLED,
        filled_amount=D("0.01"),
        remaining=1000,
        hold=1_000_000,
        book_sequence=2,
        fills=[OrderFill("t-4", D("100.00"), D("0.01"), D("0.01"), "GBP", "maker")],
        updated_at=at,
    )
    assert kept_bid == replace(
        bid,
        status=Status.FILLED,
        filled_amount=D("0.01"),
        remaining=0,
        hold=0,
        book_sequence=5,
        fills=[OrderFill("t-4", D("100.00"), D("0.01"), D("0.00002"), "BTC", "taker")],
        updated_at=at,
    )
    assert str(kept_ask.fills[0].price) == "100.00"
    assert (await read(store, "bystander")).updated_at == T0  # not in the batch
    assert await store.market_state(MARKET.pair) == {
        "_id": MARKET.pair,
        "sequence": 5,
        "bids": [["99.00", "0.005"], ["98.00", "10"]],
        "asks": [["100.00", "0.01"]],
        "updated_at": at,
    }


async def test_projecting_again_or_an_older_batch_changes_nothing(store: SpotStore) -> None:
    ask, bid, decided = crossing()
    await add_all(store, ask, bid)
    await store.project(decided, MARKET, T0 + timedelta(seconds=1))
    after = [await read(store, "ask"), await read(store, "bid")]
    state = await store.market_state(MARKET.pair)
    await store.project(decided, MARKET, T0 + timedelta(seconds=2))  # again
    older = batch(1, 2, changes=[change("ask", Status.OPEN, sequence=2)], asks=[(10_000, 2000)])
    await store.project(older, MARKET, T0 + timedelta(seconds=3))  # after a newer one
    assert [await read(store, "ask"), await read(store, "bid")] == after
    assert len(after[0].fills) == 1
    assert await store.market_state(MARKET.pair) == state


async def test_racing_projections_of_one_batch_apply_it_once(store: SpotStore) -> None:
    ask, bid, decided = crossing()
    await add_all(store, ask, bid)
    await asyncio.gather(*(store.project(decided, MARKET, T0 + MS) for _ in range(3)))
    assert [len((await read(store, o)).fills) for o in ("ask", "bid")] == [1, 1]
    assert (await store.market_state(MARKET.pair) or {})["sequence"] == 5


async def test_each_order_takes_its_last_change_in_a_batch(store: SpotStore) -> None:
    await add_all(store, order("o-1"))
    decided = batch(
        1,
        3,
        changes=[
            change("o-1", Status.OPEN, sequence=1),
            change("o-1", Status.CANCELLED, reason="user_cancelled", hold=0, sequence=1),
        ],
    )
    await store.project(decided, MARKET, T0 + MS)
    kept = await read(store, "o-1")
    assert (kept.status, kept.reason, kept.hold, kept.book_sequence) == (
        Status.CANCELLED,
        "user_cancelled",
        0,
        1,
    )


async def test_a_projection_is_guarded_by_the_sequence_not_the_status(store: SpotStore) -> None:
    """The batch decides the status; a newer batch moves any stored order, a closed one too.
    A change of an order not stored stores nothing."""
    await add_all(store, order("o-1"))
    assert await store.fail_pending("o-1", "amy", "insufficient_funds", T0)
    await store.project(batch(1, changes=[change("o-1", Status.OPEN)]), MARKET, T0 + MS)
    await store.project(batch(2, changes=[change("ghost", Status.OPEN)]), MARKET, T0 + MS)
    kept = await read(store, "o-1")
    assert (kept.status, kept.reason) == (Status.OPEN, None)
    assert await store.get("ghost") is None
    assert (await store.market_state(MARKET.pair) or {})["sequence"] == 2


async def test_market_state_is_kept_per_market(store: SpotStore) -> None:
    await store.project(batch(4, bids=[(100, 1)]), MARKET, T0)
    await store.project(batch(2, pair=OTHER.pair, asks=[(200, 3)]), OTHER, T0)
    btc, eth = await store.market_state(MARKET.pair), await store.market_state(OTHER.pair)
    assert btc is not None
    assert eth is not None
    assert (btc["sequence"], btc["bids"], btc["asks"]) == (4, [["1.00", "0.00001"]], [])
    assert (eth["sequence"], eth["bids"], eth["asks"]) == (2, [], [["2.00", "0.0003"]])
    assert await store.market_state("ETH-BTC") is None


# Copies


async def test_what_is_handed_to_the_store_or_out_of_it_is_a_copy(store: SpotStore) -> None:
    placed = order("o-1", status=Status.OPEN, book_sequence=1, expires_at=T0)
    await add_all(store, placed)
    expected = replace(placed, updated_at=T0, fills=[])
    placed.status = Status.FILLED
    placed.fills.append(OrderFill("t", D(1), D(1), D(0), "BTC", "maker"))
    handed_out = [
        await read(store, "o-1"),
        (await store.many(["o-1"]))["o-1"],
        *(await store.of_user("amy", Status)),
        *(await store.expired(T0)),
        *(await store.resting(MARKET.pair)),
    ]
    for each in handed_out:
        each.status = Status.CANCELLED
        each.amount = D(999)
        each.fills.append(OrderFill("t", D(1), D(1), D(0), "BTC", "maker"))
    assert await read(store, "o-1") == expected

    def decided() -> SpotBatch:
        return batch(1, changes=[change("o-1", Status.OPEN)], bids=[(100, 1)])

    given = decided()
    await store.add_batch(given, T0)
    await store.project(given, MARKET, T0)
    for stored in [given, *(await store.batches_after(MARKET.pair, 0))]:
        stored.changes.clear()
        stored.bids.append((1, 1))
    assert await store.undispatched(MARKET.pair) == [decided()]
    assert await store.add_batch(decided(), T0) is True  # still the decisions it stored
    state = await store.market_state(MARKET.pair)
    assert state is not None
    state["sequence"] = 0
    state["bids"][0][0] = "0.01"
    state["asks"].append(["1.00", "1"])
    assert await store.market_state(MARKET.pair) == {
        "_id": MARKET.pair,
        "sequence": 1,
        "bids": [["1.00", "0.00001"]],
        "asks": [],
        "updated_at": T0,
    }


# Through the service: a client_order_id names one order on either store


class _Published(EventPublisher):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        self.messages.append(value)


class _Locks(SpotWallet):
    def __init__(self) -> None:
        self.locked: list[str] = []

    async def lock(self, order: SpotOrder) -> None:
        self.locked.append(order.order_id)

    async def dispatch(self, batch: SpotBatch, market: Market) -> bool:
        raise AssertionError("not the API's job")


async def _sell_eth(
    orders: SpotOrders,
    amount: str,
    client_order_id: str,
    expires_in_seconds: int | None = None,
) -> SpotOrder:
    """amy's limit sell of `amount` ETH at 0.05 BTC under `client_order_id`."""
    return await orders.place(
        "amy",
        pair="ETH-BTC",
        side=Side.SELL,
        type=OrderType.LIMIT,
        amount=amount,
        price="0.05000",
        quote_amount=None,
        client_order_id=client_order_id,
        expires_in_seconds=expires_in_seconds,
    )


async def test_a_client_order_id_used_again_with_another_expiry_is_another_order(
    store: SpotStore,
) -> None:
    clock = FakeClock()
    orders = SpotOrders(
        store, _Locks(), _Published(), "t.trading.orders", Fees.of("0.001", "0.002"), clock
    )

    async def place(expires_in_seconds: int | None) -> SpotOrder:
        return await _sell_eth(orders, "0.5", "mine-2", expires_in_seconds)

    first = await place(60)
    clock.advance(5.0005)  # a retry a moment later asks for the same order: its lifetime
    assert (await place(60)).order_id == first.order_id
    # An order resting for an hour, or until cancelled, is not the one that lives a minute: the
    # answer would show an order the request did not ask for, one that may fill after the
    # minute the user meant it to trade in.
    for other in (3600, None):
        with pytest.raises(Conflict) as refused:
            await place(other)
        assert refused.value.code == "idempotency_conflict"


async def test_a_client_order_id_used_again_places_no_second_order(store: SpotStore) -> None:
    locks = _Locks()
    orders = SpotOrders(
        store, locks, _Published(), "t.trading.orders", Fees.of("0.001", "0.002"), FakeClock()
    )

    async def place(amount: str) -> SpotOrder:
        return await _sell_eth(orders, amount, "mine-1")

    first, again = await place("0.5"), await place("0.5")
    assert again.order_id == first.order_id
    assert again == await orders.get(first.order_id, "amy")
    with pytest.raises(Conflict) as refused:
        await place("0.6")
    assert refused.value.code == "idempotency_conflict"
    assert locks.locked == [first.order_id]  # locked once
    assert ids(list((await orders.of_user("amy", None)).items)) == [first.order_id]
    # its lock refused: failed once, whoever answers again
    answer = CommandResult.model_validate(
        {
            "command_id": "c",
            "type": "lock",
            "transaction_type": "spot_order",
            "reference_id": f"{first.order_id}:lock",
            "user_id": "amy",
            "status": "rejected",
            "reason": "insufficient_funds",
        }
    )
    await orders.apply_result(answer)
    failed = await orders.get(first.order_id, "amy")
    assert (failed.status, failed.reason) == (Status.FAILED, "insufficient_funds")
