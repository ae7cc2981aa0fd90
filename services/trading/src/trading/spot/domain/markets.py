"""Markets: prices in integer ticks, amounts in integer steps, money in integer units of a currency.

The engine never touches Decimal while matching: a price is a number of `price_tick`s, an amount a
number of `amount_step`s, and money a number of the currency's smallest units (its quantum). The
conversions here are exact and refuse what does not fit (a price off the tick is refused, never
rounded).

A fill's quote amount, price × amount, can be finer than the quote currency holds (0.00001 BTC at
52000.01 GBP is 0.5200001 GBP). It is rounded DOWN to the quote's scale: that is what the seller
receives and what the buyer pays, so a buyer never pays more than price × amount, the sum of an
order's fills never exceeds its lock (amount × price rounded up), and no money is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Final

from shared.money import LEDGER_CONTEXT, Currency, format_amount, get_currency


class MarketError(ValueError):
    """An order that does not fit its market; `code` is machine-readable and stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _ceil_div(numerator: int, denominator: int) -> int:
    return -((-numerator) // denominator)


@dataclass(frozen=True, slots=True)
class FeeRate:
    """A fee rate as an exact fraction; a fee is always rounded UP to a whole unit."""

    rate: Decimal
    _num: int = field(init=False, repr=False)
    _den: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rate.is_finite() or self.rate < 0 or self.rate >= 1:
            raise ValueError(f"a fee rate is in [0, 1), got {self.rate}")
        fraction = Fraction(self.rate)
        object.__setattr__(self, "_num", fraction.numerator)
        object.__setattr__(self, "_den", fraction.denominator)

    def of(self, units: int) -> int:
        """The fee on `units` received: units × rate, rounded up."""
        return _ceil_div(units * self._num, self._den)


@dataclass(frozen=True, slots=True)
class Fees:
    maker: FeeRate
    taker: FeeRate

    @classmethod
    def of(cls, maker: Decimal | str, taker: Decimal | str) -> Fees:
        return cls(FeeRate(Decimal(maker)), FeeRate(Decimal(taker)))

    @property
    def highest(self) -> FeeRate:
        return self.maker if self.maker.rate >= self.taker.rate else self.taker


@dataclass(frozen=True, slots=True)
class Market:
    pair: str
    base: Currency
    quote: Currency
    price_tick: Decimal
    amount_step: Decimal
    min_amount: Decimal
    base_units_per_step: int = field(init=False)
    # quote units of price_ticks × amount_steps = ticks × steps × _num / _den (exact)
    _num: int = field(init=False, repr=False)
    _den: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        per_step = Fraction(self.amount_step) / Fraction(self.base.quantum)
        if per_step.denominator != 1:
            raise ValueError(f"{self.pair}: amount_step finer than {self.base.code} holds")
        if Fraction(self.min_amount) % Fraction(self.amount_step) != 0:
            raise ValueError(f"{self.pair}: min_amount is not a whole number of steps")
        ratio = (
            Fraction(self.price_tick) * Fraction(self.amount_step) / Fraction(self.quote.quantum)
        )
        object.__setattr__(self, "base_units_per_step", int(per_step))
        object.__setattr__(self, "_num", ratio.numerator)
        object.__setattr__(self, "_den", ratio.denominator)

    # Decimal ⇄ integers, at the boundary only

    def ticks(self, price: Decimal) -> int:
        count = Fraction(price) / Fraction(self.price_tick)
        if count.denominator != 1:
            raise MarketError(
                "price_off_tick", f"{self.pair} prices are multiples of {self.price_tick}"
            )
        if count <= 0:
            raise MarketError("amount_not_positive", "price must be greater than zero")
        return int(count)

    def steps(self, amount: Decimal) -> int:
        count = Fraction(amount) / Fraction(self.amount_step)
        if count.denominator != 1:
            raise MarketError(
                "amount_off_step", f"{self.pair} amounts are multiples of {self.amount_step}"
            )
        if count <= 0:
            raise MarketError("amount_not_positive", "amount must be greater than zero")
        return int(count)

    def quote_units_of(self, amount: Decimal) -> int:
        count = Fraction(amount) / Fraction(self.quote.quantum)
        if count.denominator != 1 or count <= 0:
            raise MarketError(
                "amount_too_precise", f"{self.quote.code} has {self.quote.scale} decimal places"
            )
        return int(count)

    def price(self, ticks: int) -> Decimal:
        return LEDGER_CONTEXT.multiply(Decimal(ticks), self.price_tick)

    def price_text(self, ticks: int) -> str:
        """A price as shown: with the tick's decimals ("52000.00"), as prices are given."""
        return format(self.price(ticks), "f")

    def amount(self, steps: int) -> Decimal:
        return LEDGER_CONTEXT.multiply(Decimal(steps), self.amount_step)

    def base_amount(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.base.scale)

    def quote_amount(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.quote.scale)

    # integer money

    def base_units(self, steps: int) -> int:
        return steps * self.base_units_per_step

    def quote_floor(self, ticks: int, steps: int) -> int:
        """Quote units of a fill: price × amount rounded down (see the module's docstring)."""
        return ticks * steps * self._num // self._den

    def quote_ceil(self, ticks: int, steps: int) -> int:
        """Quote units a limit buy locks: price × amount rounded up."""
        return _ceil_div(ticks * steps * self._num, self._den)

    def steps_affordable(self, ticks: int, budget: int) -> int:
        """The most steps whose quote_floor at `ticks` is within `budget` units."""
        return ((budget + 1) * self._den - 1) // (ticks * self._num)

    def as_json(self) -> dict[str, str]:
        return {
            "pair": self.pair,
            "base": self.base.code,
            "quote": self.quote.code,
            "price_tick": format_amount(self.price_tick),
            "amount_step": format_amount(self.amount_step),
            "min_amount": format_amount(self.min_amount),
        }


def _market(pair: str, price_tick: str, amount_step: str, min_amount: str) -> Market:
    base, quote = pair.split("-")
    return Market(
        pair,
        get_currency(base),
        get_currency(quote),
        Decimal(price_tick),
        Decimal(amount_step),
        Decimal(min_amount),
    )


MARKETS: Final[dict[str, Market]] = {
    m.pair: m
    for m in (
        _market("BTC-GBP", "0.01", "0.00001", "0.0001"),
        _market("ETH-GBP", "0.01", "0.0001", "0.001"),
        _market("ETH-BTC", "0.00001", "0.0001", "0.001"),
        _market("BTC-USDT", "0.01", "0.00001", "0.0001"),
    )
}


def get_market(pair: object) -> Market:
    market = MARKETS.get(pair) if isinstance(pair, str) else None
    if market is None:
        raise MarketError("unknown_market", f"unknown market: {str(pair)[:20]!r}")
    return market
