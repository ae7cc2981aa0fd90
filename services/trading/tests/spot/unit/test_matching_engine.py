"""The matching engine against a naive reference book and against a model of the wallet's holds.

Hypothesis generates sequences of limit and market orders and cancels from three users. After every
step: the engine's fills equal the reference's (same price, amount, quote, fees, ids), every order
ends in the same status with the same reason, the book is never crossed, each fill is at the maker's
price, per currency users + open-order holds + fees equal what was deposited, and what a modelled
wallet holds under each order equals what the engine says the order holds (zero once it is closed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.spot.domain.book import (
    NO_LIQUIDITY,
    SELF_TRADE,
    Fill,
    Order,
    OrderBook,
    OrderChange,
    OrderType,
    Side,
    Status,
)
from trading.spot.domain.markets import MARKETS, Fees, Market

from .reference_book import ReferenceBook, RefOrder

MAKER, TAKER = Decimal("0.001"), Decimal("0.002")
USERS = ("alice", "bob", "carol")
DEPOSIT_UNITS = 10**15


@dataclass(frozen=True)
class Place:
    user: str
    side: Side
    type: OrderType
    price: int  # ticks (for a market buy: the price its budget is computed at)
    steps: int
    by_quote: bool  # a market buy given as quote to spend


@dataclass(frozen=True)
class Cancel:
    index: int


def operations(
    ticks: tuple[int, int], steps: tuple[int, int]
) -> st.SearchStrategy[list[Place | Cancel]]:
    place = st.builds(
        Place,
        st.sampled_from(USERS),
        st.sampled_from(list(Side)),
        st.sampled_from([OrderType.LIMIT, OrderType.LIMIT, OrderType.LIMIT, OrderType.MARKET]),
        st.integers(*ticks),
        st.integers(*steps),
        st.booleans(),
    )
    cancel = st.builds(Cancel, st.integers(0, 200))
    return st.lists(st.one_of(place, place, place, cancel), min_size=1, max_size=60)


class Harness:
    """Engine + reference + a wallet model, driven together."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.book = OrderBook(
            market, Fees(*(Fees.of(MAKER, TAKER).maker, Fees.of(MAKER, TAKER).taker))
        )
        self.reference = ReferenceBook(market, MAKER, TAKER)
        self.available: dict[tuple[str, str], int] = defaultdict(int)
        self.holds: dict[str, int] = {}
        self.fees: dict[str, int] = defaultdict(int)
        self.orders: dict[str, Order] = {}
        self.ref_orders: dict[str, RefOrder] = {}
        self.lock_currency: dict[str, str] = {}
        self.owner: dict[str, str] = {}
        for user in USERS:
            for currency in (market.base.code, market.quote.code):
                self.available[user, currency] = DEPOSIT_UNITS
        self.maker_price: dict[str, int] = {}

    def place(self, op: Place, order_id: str) -> None:
        market = self.market
        remaining: int | None = op.steps
        if op.side is Side.SELL:
            currency, lock = market.base.code, market.base_units(op.steps)
        elif op.type is OrderType.LIMIT:
            currency, lock = market.quote.code, market.quote_ceil(op.price, op.steps)
        else:
            currency, lock = market.quote.code, max(1, market.quote_ceil(op.price, op.steps))
            if op.by_quote:
                remaining = None
        if self.available[op.user, currency] < lock:
            return  # the wallet would refuse the lock: the order never reaches the book
        self.available[op.user, currency] -= lock
        self.holds[order_id] = lock
        self.lock_currency[order_id] = currency
        self.owner[order_id] = op.user
        price = op.price if op.type is OrderType.LIMIT else None
        order = Order(order_id, op.user, op.side, op.type, price, remaining, lock)
        self.orders[order_id] = order
        ref = RefOrder(
            order_id,
            op.user,
            op.side.value,
            op.type.value,
            None if price is None else market.price(price),
            None if remaining is None else market.amount(remaining),
            self.to_decimal(currency, lock),
        )
        self.ref_orders[order_id] = ref
        fills, changes = self.book.submit(order)
        ref_fills = self.reference.submit(ref)
        self.apply(fills, changes)
        assert [self.as_reference(f) for f in fills] == [
            (
                f.trade_id,
                f.price,
                f.amount,
                f.quote,
                f.buy_order_id,
                f.sell_order_id,
                f.buyer_fee,
                f.seller_fee,
            )
            for f in ref_fills
        ]

    def cancel(self, order_id: str) -> None:
        change = self.book.cancel(order_id)
        assert (change is not None) == self.reference.cancel(order_id)
        if change is not None:
            assert change.status is Status.CANCELLED
            self.apply([], [change])

    def to_decimal(self, currency: str, units: int) -> Decimal:
        if currency == self.market.base.code:
            return self.market.base_amount(units)
        return self.market.quote_amount(units)

    def as_reference(self, fill: Fill) -> tuple[object, ...]:
        m = self.market
        return (
            fill.trade_id,
            m.price(fill.price),
            m.amount(fill.steps),
            m.quote_amount(fill.quote_units),
            fill.buy_order_id,
            fill.sell_order_id,
            m.base_amount(fill.buyer_fee),
            m.quote_amount(fill.seller_fee),
        )

    def apply(self, fills: list[Fill], changes: list[OrderChange]) -> None:
        """What the wallet does with settle_trade and unlock commands, checked as it would be."""
        base, quote = self.market.base.code, self.market.quote.code
        for fill in fills:
            maker_id = fill.sell_order_id if fill.taker_side is Side.BUY else fill.buy_order_id
            assert fill.price == self.maker_price[maker_id], "a fill is at the maker's price"
            self.holds[fill.buy_order_id] -= fill.quote_units
            self.holds[fill.sell_order_id] -= fill.base_units
            assert self.holds[fill.buy_order_id] >= 0
            assert self.holds[fill.sell_order_id] >= 0
            assert 0 <= fill.seller_fee < fill.quote_units
            assert 0 <= fill.buyer_fee < fill.base_units
            self.available[fill.seller_id, quote] += fill.quote_units - fill.seller_fee
            self.available[fill.buyer_id, base] += fill.base_units - fill.buyer_fee
            self.fees[quote] += fill.seller_fee
            self.fees[base] += fill.buyer_fee
        for change in changes:
            if change.released:
                assert change.released > 0
                self.holds[change.order_id] -= change.released
                assert self.holds[change.order_id] >= 0
                self.available[change.user_id, self.lock_currency[change.order_id]] += (
                    change.released
                )
            if change.order_id in self.book and change.order_id not in self.maker_price:
                price = self.orders[change.order_id].price
                assert price is not None
                self.maker_price[change.order_id] = price

    def check(self) -> None:
        book, market = self.book, self.market
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, "the book is never crossed"
        bids, asks = book.depth()
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        for order_id, order in self.orders.items():
            ref = self.ref_orders[order_id]
            assert (order.status.value, order.filled) == (
                ref.status,
                market.steps(ref.filled) if ref.filled else 0,
            )
            resting = order_id in book
            assert resting == (ref in self.reference.resting)
            # what the wallet holds under the order is what the engine says it holds
            assert self.holds[order_id] == (order.hold if resting else 0)
            assert self.to_decimal(self.lock_currency[order_id], self.holds[order_id]) == ref.hold
        for currency in (market.base.code, market.quote.code):
            users = sum(self.available[u, currency] for u in USERS)
            held = sum(h for o, h in self.holds.items() if self.lock_currency[o] == currency)
            assert users + held + self.fees[currency] == DEPOSIT_UNITS * len(USERS)
        for level_price, steps in bids + asks:
            assert steps > 0, level_price

    def run(self, ops: list[Place | Cancel]) -> None:
        placed: list[str] = []
        for number, op in enumerate(ops):
            if isinstance(op, Place):
                order_id = f"o{number}"
                self.place(op, order_id)
                if order_id in self.orders:
                    placed.append(order_id)
            elif placed:
                self.cancel(placed[op.index % len(placed)])
            self.check()


@pytest.mark.parametrize(
    ("pair", "ticks", "steps"),
    [
        ("BTC-GBP", (5_200_000, 5_200_012), (1, 3_000)),  # realistic: around 52000.00 GBP
        ("BTC-GBP", (1, 400), (1, 40)),  # tiny prices: rounding and dust everywhere
        ("ETH-BTC", (3_000, 3_010), (1, 500)),
        ("BTC-USDT", (9_000_000, 9_000_005), (1, 200)),
    ],
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_matches_the_reference_and_conserves_money(
    pair: str, ticks: tuple[int, int], steps: tuple[int, int], data: st.DataObject
) -> None:
    Harness(MARKETS[pair]).run(data.draw(operations(ticks, steps)))


def fresh_book() -> OrderBook:
    return OrderBook(MARKETS["BTC-GBP"], Fees.of(MAKER, TAKER))


def limit(order_id: str, user: str, side: Side, price: str, amount: str) -> Order:
    market = MARKETS["BTC-GBP"]
    ticks, steps = market.ticks(Decimal(price)), market.steps(Decimal(amount))
    hold = market.base_units(steps) if side is Side.SELL else market.quote_ceil(ticks, steps)
    return Order(order_id, user, side, OrderType.LIMIT, ticks, steps, hold)


def test_a_trade_is_at_the_makers_price_and_a_cheaper_buy_gets_the_difference_back() -> None:
    book = fresh_book()
    book.submit(limit("s1", "seller", Side.SELL, "52000.00", "0.01"))
    buy = limit("b1", "buyer", Side.BUY, "52100.00", "0.01")
    assert buy.hold == 52100  # 521.00 GBP locked
    fills, changes = book.submit(buy)
    assert [(f.price, f.quote_units, f.buyer_fee, f.seller_fee) for f in fills] == [
        (5_200_000, 52000, 2000, 52)  # 520.00 GBP; fees: 0.00002 BTC (taker), 0.52 GBP (maker)
    ]
    taker = changes[-1]
    assert (taker.status, taker.released) == (Status.FILLED, 100)  # 1.00 GBP unlocked


def test_fees_are_rounded_up_per_fill() -> None:
    book = fresh_book()
    book.submit(limit("s1", "seller", Side.SELL, "52000.01", "0.00001"))
    fills, _ = book.submit(limit("b1", "buyer", Side.BUY, "52000.01", "0.00001"))
    # 0.00001 × 52000.01 = 0.5200001 GBP: the seller receives 0.52 (rounded down), its maker fee
    # 0.00052 rounds up to 0.01; the buyer's taker fee on 0.00001 BTC is 0.00000002 BTC exactly.
    assert [(f.quote_units, f.seller_fee, f.base_units, f.buyer_fee) for f in fills] == [
        (52, 1, 1000, 2)
    ]


def test_self_trade_cancels_the_takers_remainder_and_leaves_the_maker() -> None:
    book = fresh_book()
    book.submit(limit("s1", "other", Side.SELL, "100.00", "0.001"))
    book.submit(limit("s2", "me", Side.SELL, "101.00", "0.001"))
    fills, changes = book.submit(limit("b1", "me", Side.BUY, "102.00", "0.002"))
    assert [f.sell_order_id for f in fills] == ["s1"]
    assert (changes[-1].status, changes[-1].reason) == (Status.CANCELLED, SELF_TRADE)
    assert "s2" in book


def test_a_market_order_on_an_empty_side_fails_with_no_liquidity() -> None:
    book = fresh_book()
    book.submit(limit("b0", "someone", Side.BUY, "100.00", "0.001"))
    market = MARKETS["BTC-GBP"]
    order = Order(
        "m1", "me", Side.BUY, OrderType.MARKET, None, None, market.quote_units_of(Decimal(50))
    )
    fills, changes = book.submit(order)
    assert fills == []
    assert (changes[-1].status, changes[-1].reason, changes[-1].released) == (
        Status.FAILED,
        NO_LIQUIDITY,
        5000,
    )


def test_a_market_order_takes_what_the_book_has_and_cancels_the_rest() -> None:
    book = fresh_book()
    book.submit(limit("b1", "buyer", Side.BUY, "100.00", "0.001"))
    market = MARKETS["BTC-GBP"]
    steps = market.steps(Decimal("0.003"))
    sell = Order("m1", "me", Side.SELL, OrderType.MARKET, None, steps, market.base_units(steps))
    fills, changes = book.submit(sell)
    assert [market.amount(f.steps) for f in fills] == [Decimal("0.001")]
    assert (changes[-1].status, changes[-1].reason, changes[-1].released) == (
        Status.CANCELLED,
        NO_LIQUIDITY,
        200_000,
    )
    assert book.depth() == ([], [])


def test_fifo_within_a_level_and_best_price_first() -> None:
    book = fresh_book()
    book.submit(limit("s1", "a", Side.SELL, "101.00", "0.001"))
    book.submit(limit("s2", "b", Side.SELL, "100.00", "0.001"))
    book.submit(limit("s3", "c", Side.SELL, "100.00", "0.001"))
    fills, _ = book.submit(limit("b1", "d", Side.BUY, "101.00", "0.0025"))
    assert [f.sell_order_id for f in fills] == ["s2", "s3", "s1"]
    assert book.depth() == ([], [(10100, 50)])


@dataclass(eq=False)
class ComparedOrder(Order):
    """An order that counts how often the book compares it with another order."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        ComparedOrder.compared += 1
        return self is other

    __hash__ = object.__hash__


def test_a_cancel_takes_its_order_out_without_looking_through_its_price_level() -> None:
    """A cancel searched the level's queue for its order, comparing it with those before it:
    cancelling the orders at one price cost O(n²), 40,000 of them seconds of the event loop that
    every market and the HTTP API share."""
    book = fresh_book()
    market = MARKETS["BTC-GBP"]
    ticks, steps = market.ticks(Decimal("100.00")), market.steps(Decimal("0.001"))
    orders = [
        ComparedOrder(f"b{n}", "me", Side.BUY, OrderType.LIMIT, ticks, steps, 10)
        for n in range(2_000)
    ]
    for order in orders:
        book.submit(order)
    ComparedOrder.compared = 0
    for order in reversed(orders):  # the newest first: the deepest in the queue
        assert book.cancel(order.order_id) is not None
    assert ComparedOrder.compared <= len(orders)  # searched: 2,000 × 1,999 / 2
    assert book.depth() == ([], [])


@pytest.mark.parametrize(
    "cancelled",
    [
        ("s1", "s3"),  # left queued: the first is dropped when it comes to the front
        ("s2", "s5", "s1"),  # more cancelled than resting: the level is compacted
    ],
)
def test_cancels_anywhere_in_a_level_keep_the_rest_in_time_priority(
    cancelled: tuple[str, ...],
) -> None:
    book = fresh_book()
    for n in range(1, 6):
        book.submit(limit(f"s{n}", f"seller{n}", Side.SELL, "100.00", "0.001"))
    for order_id in cancelled:
        assert book.cancel(order_id) is not None
        assert book.cancel(order_id) is None
    book.submit(limit("s6", "seller6", Side.SELL, "100.00", "0.001"))
    left = [f"s{n}" for n in range(1, 7) if f"s{n}" not in cancelled]
    assert book.depth() == ([], [(10000, 100 * len(left))])
    amount = f"{Decimal('0.001') * len(left)}"
    fills, _ = book.submit(limit("b1", "buyer", Side.BUY, "100.00", amount))
    assert [f.sell_order_id for f in fills] == left
    assert book.depth() == ([], [])


def _copy(order: Order) -> Order:
    return Order(
        order.order_id,
        order.user_id,
        order.side,
        order.type,
        order.price,
        order.remaining,
        order.hold,
        order.filled,
        order.sequence,
        order.status,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=operations((5_200_000, 5_200_010), (1, 500)),
    after=operations((5_200_000, 5_200_010), (1, 500)),
)
def test_a_book_rebuilt_from_its_resting_orders_decides_as_the_original(
    before: list[Place | Cancel], after: list[Place | Cancel]
) -> None:
    """What a restart does: a new book from the stored resting orders (in time priority) and the
    last sequence number decides every later order exactly as the book that never stopped."""
    original = Harness(MARKETS["BTC-GBP"])
    original.run(before)
    rebuilt = OrderBook(original.market, original.book.fees, sequence=original.book.sequence)
    for order in original.book.resting():
        rebuilt.restore(_copy(order))
    assert rebuilt.depth() == original.book.depth()
    assert rebuilt.sequence == original.book.sequence
    market = original.market
    for number, op in enumerate(after):
        if isinstance(op, Cancel):
            resting = original.book.resting()
            if resting:
                order_id = resting[op.index % len(resting)].order_id
                assert original.book.cancel(order_id) == rebuilt.cancel(order_id)
            continue
        steps = op.steps
        hold = (
            market.base_units(steps) if op.side is Side.SELL else market.quote_ceil(op.price, steps)
        )
        price = op.price if op.type is OrderType.LIMIT else None
        order_id = f"after{number}"
        decided = original.book.submit(
            Order(order_id, op.user, op.side, op.type, price, steps, hold)
        )
        assert (
            rebuilt.submit(Order(order_id, op.user, op.side, op.type, price, steps, hold))
            == decided
        )
    assert rebuilt.depth() == original.book.depth()
