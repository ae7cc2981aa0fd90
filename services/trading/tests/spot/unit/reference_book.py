"""A deliberately naive order book in Decimal: the reference the engine is checked against.

No sorted maps, no integer ticks: every decision scans a plain list and computes money with Decimal
quantize, so a mistake in the engine's integer arithmetic or its price levels shows as a difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from trading.spot.domain.markets import Market


@dataclass
class RefOrder:
    order_id: str
    user_id: str
    side: str
    type: str
    price: Decimal | None
    remaining: Decimal | None  # base amount; None: a market buy bounded by its hold
    hold: Decimal
    filled: Decimal = Decimal(0)
    sequence: int = 0
    status: str = "open"
    reason: str | None = None


@dataclass(frozen=True)
class RefFill:
    trade_id: str
    price: Decimal
    amount: Decimal
    quote: Decimal
    buy_order_id: str
    sell_order_id: str
    buyer_fee: Decimal
    seller_fee: Decimal


class ReferenceBook:
    def __init__(self, market: Market, maker_rate: Decimal, taker_rate: Decimal) -> None:
        self.market = market
        self.maker_rate = maker_rate
        self.taker_rate = taker_rate
        self.resting: list[RefOrder] = []
        self.sequence = 0
        self.released: dict[str, Decimal] = {}

    def _quote(self, price: Decimal, amount: Decimal) -> Decimal:
        return (price * amount).quantize(self.market.quote.quantum, rounding=ROUND_FLOOR)

    @staticmethod
    def _fee(value: Decimal, rate: Decimal, quantum: Decimal) -> Decimal:
        return (value * rate).quantize(quantum, rounding=ROUND_CEILING)

    def _viable(self, price: Decimal, amount: Decimal) -> bool:
        rate = max(self.maker_rate, self.taker_rate)
        quote = self._quote(price, amount)
        return (
            quote > 0
            and self._fee(quote, rate, self.market.quote.quantum) < quote
            and self._fee(amount, rate, self.market.base.quantum) < amount
        )

    def _release(self, order: RefOrder, amount: Decimal) -> None:
        order.hold -= amount
        self.released[order.order_id] = self.released.get(order.order_id, Decimal(0)) + amount

    def _close(self, order: RefOrder, status: str, reason: str | None = None) -> None:
        self._release(order, order.hold)
        order.status, order.reason = status, reason
        if order in self.resting:
            self.resting.remove(order)

    def cancel(self, order_id: str, reason: str = "user_cancelled") -> bool:
        for order in self.resting:
            if order.order_id == order_id:
                self._close(order, "cancelled", reason)
                return True
        return False

    def _best_maker(self, taker: RefOrder) -> RefOrder | None:
        opposite = [o for o in self.resting if o.side != taker.side]
        if not opposite:
            return None
        if taker.side == "buy":
            return min(opposite, key=lambda o: (o.price, o.sequence))
        return min(opposite, key=lambda o: (-o.price, o.sequence))  # type: ignore[operator]

    def submit(self, taker: RefOrder) -> list[RefFill]:
        self.sequence += 1
        taker.sequence = self.sequence
        fills: list[RefFill] = []
        step = self.market.amount_step
        stop: str | None = None
        while taker.remaining != 0:
            maker = self._best_maker(taker)
            if maker is None:
                stop = "no_liquidity"
                break
            price = maker.price
            assert price is not None
            assert maker.remaining is not None
            if taker.price is not None and (
                price > taker.price if taker.side == "buy" else price < taker.price
            ):
                break
            if maker.user_id == taker.user_id:
                stop = "self_trade"
                break
            amount = (
                maker.remaining
                if taker.remaining is None
                else min(taker.remaining, maker.remaining)
            )
            budget_bound = False
            if taker.side == "buy" and taker.type == "market":
                affordable = Decimal(0)
                while self._quote(price, affordable + step) <= taker.hold and affordable < amount:
                    affordable += step
                if affordable < amount:
                    amount, budget_bound = affordable, True
                if amount == 0:
                    stop = "slippage"
                    break
            quote = self._quote(price, amount)
            buyer_rate = self.taker_rate if taker.side == "buy" else self.maker_rate
            seller_rate = self.maker_rate if taker.side == "buy" else self.taker_rate
            buyer_fee = self._fee(amount, buyer_rate, self.market.base.quantum)
            seller_fee = self._fee(quote, seller_rate, self.market.quote.quantum)
            if quote == 0 or seller_fee >= quote or buyer_fee >= amount:
                if amount < maker.remaining:
                    stop = "slippage" if budget_bound else "dust"
                    break
                self._close(maker, "cancelled", "dust")
                continue
            self.sequence += 1
            buy, sell = (taker, maker) if taker.side == "buy" else (maker, taker)
            fills.append(
                RefFill(
                    f"{self.market.pair}-{self.sequence}",
                    price,
                    amount,
                    quote,
                    buy.order_id,
                    sell.order_id,
                    buyer_fee,
                    seller_fee,
                )
            )
            buy.hold -= quote
            sell.hold -= amount
            taker.filled += amount
            maker.filled += amount
            if taker.remaining is not None:
                taker.remaining -= amount
            maker.remaining -= amount
            if maker.remaining == 0:
                self._close(maker, "filled")
            else:
                maker.status = "partially_filled"
                if not self._viable(price, maker.remaining):
                    self._close(maker, "cancelled", "dust")
        self._finish(taker, stop)
        return fills

    def _finish(self, taker: RefOrder, stop: str | None) -> None:
        if taker.remaining == 0:
            self._close(taker, "filled")
        elif stop == "slippage" and taker.remaining is None:
            if taker.filled:
                self._close(taker, "filled")
            else:
                self._close(taker, "failed", "slippage")
        elif taker.type == "market" or stop in ("self_trade", "dust", "slippage"):
            stop = stop or "no_liquidity"
            if stop == "no_liquidity" and not taker.filled:
                self._close(taker, "failed", stop)
            else:
                self._close(taker, "cancelled", stop)
        else:
            assert taker.price is not None
            assert taker.remaining is not None
            if not self._viable(taker.price, taker.remaining):
                self._close(taker, "cancelled", "dust")
                return
            if taker.side == "buy":
                needed = (taker.price * taker.remaining).quantize(
                    self.market.quote.quantum, rounding=ROUND_CEILING
                )
                self._release(taker, taker.hold - needed)
            taker.status = "partially_filled" if taker.filled else "open"
            self.resting.append(taker)
