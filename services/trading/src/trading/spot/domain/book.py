"""The order book of one market and its matching: price-time priority, trades at the maker's price.

Pure and single-threaded: one matcher owns one book (one writer per market). Bids and asks are
price levels in sorted maps (bids keyed by the negated price, so the best level of either side is
the first key), each level a FIFO queue of resting orders. A cancel takes its order off the book
in O(1) (amortised) however many orders rest at its price: the queue keeps it, marked cancelled,
until it reaches the front or the level is compacted.

Money is tracked per order as `hold`: the units still locked for it in the wallet (base units for a
sell, quote units for a buy). Each fill moves money out of both holds; whatever an order holds when
it leaves the book (filled, cancelled) or beyond what its resting remainder needs (a buy that paid
less than its limit) is released, and the caller unlocks exactly that.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

from sortedcontainers import SortedDict

from trading.spot.domain.markets import Fees, Market


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class Status(StrEnum):
    PENDING = "pending"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    FAILED = "failed"


CLOSED_STATUSES: Final = frozenset({Status.FILLED, Status.CANCELLED, Status.FAILED})

# Why an order was cancelled or failed (the contract's list, extended where it says "…").
NO_LIQUIDITY: Final = "no_liquidity"
SELF_TRADE: Final = "self_trade"
USER_CANCELLED: Final = "user_cancelled"
# Its `expires_in_seconds` ran out while it was open.
EXPIRED: Final = "expired"
# What is left cannot trade at its price: its quote amount rounds to nothing or its fee would
# take all of what it receives (a tiny remainder after partial fills).
DUST: Final = "dust"
# A market buy given in base spent all the quote it locked before getting its whole amount.
SLIPPAGE: Final = "slippage"


@dataclass(slots=True, eq=False)
class Order:
    order_id: str
    user_id: str
    side: Side
    type: OrderType
    price: int | None  # ticks; None for a market order
    remaining: int | None  # steps; None: a market buy bounded only by the quote it holds
    hold: int  # units still locked for it (base for a sell, quote for a buy)
    filled: int = 0  # steps
    sequence: int = 0  # time priority, given when the book receives it
    status: Status = Status.OPEN


class Fill(NamedTuple):  # a NamedTuple: built hundreds of thousands of times a second
    trade_id: str
    sequence: int
    price: int  # ticks: the maker's price
    steps: int
    base_units: int
    quote_units: int
    buy_order_id: str
    sell_order_id: str
    buyer_id: str
    seller_id: str
    taker_side: Side
    buyer_fee: int  # base units, taken from what the buyer receives
    seller_fee: int  # quote units, taken from what the seller receives


class OrderChange(NamedTuple):
    """An order's state after a decision, and what it released (to be unlocked) by it."""

    order_id: str
    user_id: str
    side: Side
    status: Status
    reason: str | None
    filled: int
    remaining: int | None
    hold: int
    released: int
    sequence: int


Decision = tuple[list[Fill], list[OrderChange]]


class _Level:
    __slots__ = ("count", "orders", "total")

    def __init__(self) -> None:
        # In arrival order. A cancelled order stays in it (searching the queue for it made
        # cancelling the orders at one price quadratic) until it reaches the front, where it is
        # dropped, or until the cancelled outnumber the resting, when the queue is rebuilt
        # without them: it holds at most twice the level's orders, and each rebuild follows at
        # least as many cancels as it keeps orders.
        self.orders: deque[Order] = deque()
        self.count = 0  # orders resting at this price
        self.total = 0  # steps resting at this price


def _change(order: Order, released: int, reason: str | None = None) -> OrderChange:
    return OrderChange(
        order.order_id,
        order.user_id,
        order.side,
        order.status,
        reason,
        order.filled,
        order.remaining,
        order.hold,
        released,
        order.sequence,
    )


class OrderBook:
    def __init__(self, market: Market, fees: Fees, *, sequence: int = 0) -> None:
        self.market = market
        self.fees = fees
        self.sequence = sequence  # one counter for orders and trades: ids are deterministic
        self._bids: SortedDict[int, _Level] = SortedDict()  # key: -price
        self._asks: SortedDict[int, _Level] = SortedDict()  # key: price
        self._resting: dict[str, Order] = {}
        self._highest_fee = fees.highest
        self._per_step = market.base_units_per_step

    # queries

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._resting

    def __len__(self) -> int:
        return len(self._resting)

    def get(self, order_id: str) -> Order | None:
        return self._resting.get(order_id)

    def resting(self) -> list[Order]:
        return sorted(self._resting.values(), key=lambda o: o.sequence)

    def best_bid(self) -> int | None:
        return -self._bids.peekitem(0)[0] if self._bids else None

    def best_ask(self) -> int | None:
        return self._asks.peekitem(0)[0] if self._asks else None

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated (ticks, steps) per level, best first."""
        bids = [(-key, level.total) for key, level in self._bids.items()[:levels]]
        asks = [(key, level.total) for key, level in self._asks.items()[:levels]]
        return bids, asks

    # decisions

    def restore(self, order: Order) -> None:
        """Put back an order that was resting before a restart (call in sequence order)."""
        if order.price is None or not order.remaining:
            raise ValueError(f"only a resting limit order can be restored: {order.order_id}")
        self._rest(order)
        self.sequence = max(self.sequence, order.sequence)

    def cancel(self, order_id: str, reason: str = USER_CANCELLED) -> OrderChange | None:
        """Take a resting order off the book; None when it is not resting (filled, unknown)."""
        order = self._resting.pop(order_id, None)
        if order is None:
            return None
        assert order.price is not None
        assert order.remaining is not None
        side = self._bids if order.side is Side.BUY else self._asks
        key = -order.price if order.side is Side.BUY else order.price
        level = side[key]
        level.count -= 1
        level.total -= order.remaining
        change = self._close(order, Status.CANCELLED, reason)
        if not level.count:
            del side[key]
        elif len(level.orders) > 2 * level.count:
            level.orders = deque(o for o in level.orders if o.status is not Status.CANCELLED)
        return change

    def withdraw(self, order: Order, reason: str = USER_CANCELLED) -> OrderChange:
        """Close an order that never entered the book (cancelled while its lock was in flight)."""
        self.sequence += 1
        order.sequence = self.sequence
        return self._close(order, Status.CANCELLED, reason)

    def submit(self, taker: Order) -> Decision:
        """Match a new order (its lock applied) against the book; rest what a limit order has left."""
        self.sequence += 1
        taker.sequence = self.sequence
        fills: list[Fill] = []
        changes: list[OrderChange] = []
        buying = taker.side is Side.BUY
        book = self._asks if buying else self._bids
        market = self.market
        maker_fee, taker_fee = self.fees.maker, self.fees.taker
        stop: str | None = None
        while taker.remaining != 0:
            if not book:
                stop = NO_LIQUIDITY
                break
            key, level = book.peekitem(0)
            price = key if buying else -key
            if taker.price is not None and (price > taker.price if buying else price < taker.price):
                break
            maker: Order = level.orders[0]
            if maker.status is Status.CANCELLED:  # cancelled while it queued
                level.orders.popleft()
                continue
            if maker.user_id == taker.user_id:
                stop = SELF_TRADE
                break
            assert maker.remaining is not None
            steps = (
                maker.remaining
                if taker.remaining is None
                else min(taker.remaining, maker.remaining)
            )
            budget_bound = False
            if buying and taker.type is OrderType.MARKET:
                affordable = market.steps_affordable(price, taker.hold)
                if affordable < steps:
                    steps, budget_bound = affordable, True
                if steps == 0:
                    stop = SLIPPAGE
                    break
            base = steps * market.base_units_per_step
            quote = market.quote_floor(price, steps)
            buyer_fee = (taker_fee if buying else maker_fee).of(base)
            seller_fee = (maker_fee if buying else taker_fee).of(quote)
            if quote == 0 or seller_fee >= quote or buyer_fee >= base:
                if steps < maker.remaining:  # the taker's remainder is what cannot trade
                    stop = SLIPPAGE if budget_bound else DUST
                    break
                changes.append(self.cancel(maker.order_id, DUST))  # type: ignore[arg-type]
                continue
            self.sequence += 1
            if buying:
                buy, sell = taker, maker
            else:
                buy, sell = maker, taker
            fills.append(
                Fill(
                    f"{market.pair}-{self.sequence}",
                    self.sequence,
                    price,
                    steps,
                    base,
                    quote,
                    buy.order_id,
                    sell.order_id,
                    buy.user_id,
                    sell.user_id,
                    taker.side,
                    buyer_fee,
                    seller_fee,
                )
            )
            buy.hold -= quote
            sell.hold -= base
            taker.filled += steps
            if taker.remaining is not None:
                taker.remaining -= steps
            maker.filled += steps
            maker.remaining -= steps
            level.total -= steps
            if maker.remaining == 0:
                level.orders.popleft()
                level.count -= 1
                del self._resting[maker.order_id]
                if not level.count:
                    del book[key]
                changes.append(self._close(maker, Status.FILLED))
            else:
                maker.status = Status.PARTIALLY_FILLED
                if self._viable(maker.price, maker.remaining):  # type: ignore[arg-type]
                    changes.append(_change(maker, 0))
                else:
                    changes.append(self.cancel(maker.order_id, DUST))  # type: ignore[arg-type]
        changes.append(self._settle_taker(taker, stop))
        return fills, changes

    # internals

    def _settle_taker(self, taker: Order, stop: str | None) -> OrderChange:
        if taker.remaining == 0:
            return self._close(taker, Status.FILLED)
        if stop == SLIPPAGE and taker.remaining is None:
            # a market buy by quote amount: spent what it could
            return self._close(
                taker,
                Status.FILLED if taker.filled else Status.FAILED,
                None if taker.filled else SLIPPAGE,
            )
        if taker.type is OrderType.MARKET or stop in (SELF_TRADE, DUST, SLIPPAGE):
            if stop is None:
                stop = NO_LIQUIDITY
            if stop == NO_LIQUIDITY and not taker.filled:
                return self._close(taker, Status.FAILED, NO_LIQUIDITY)
            return self._close(taker, Status.CANCELLED, stop)
        assert taker.price is not None
        assert taker.remaining is not None
        if not self._viable(taker.price, taker.remaining):
            return self._close(taker, Status.CANCELLED, DUST)
        released = 0
        if taker.side is Side.BUY:
            # paid less than its limit on what it took: keep only what the rest needs at the limit
            needed = self.market.quote_ceil(taker.price, taker.remaining)
            released = taker.hold - needed
            taker.hold = needed
        taker.status = Status.PARTIALLY_FILLED if taker.filled else Status.OPEN
        self._rest(taker)
        return _change(taker, released)

    def _viable(self, price: int, steps: int) -> bool:
        """Whether `steps` at `price` can trade at all: a quote amount, and fees below receipts."""
        quote = self.market.quote_floor(price, steps)
        rate = self._highest_fee
        return (
            quote > 0
            and rate.of(quote) < quote
            and rate.of(steps * self._per_step) < steps * self._per_step
        )

    def _rest(self, order: Order) -> None:
        assert order.price is not None
        assert order.remaining is not None
        if order.side is Side.BUY:
            side, key = self._bids, -order.price
        else:
            side, key = self._asks, order.price
        level = side.get(key)
        if level is None:
            level = side[key] = _Level()
        level.orders.append(order)
        level.count += 1
        level.total += order.remaining
        self._resting[order.order_id] = order

    @staticmethod
    def _close(order: Order, status: Status, reason: str | None = None) -> OrderChange:
        released, order.hold = order.hold, 0
        order.status = status
        return _change(order, released, reason)
