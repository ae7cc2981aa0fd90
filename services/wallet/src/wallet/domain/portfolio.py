"""A user's portfolio valued at one price snapshot: pure arithmetic, no I/O (CONTRACT.md, "Wallet
read side").

Values and sums stay unrounded; only what is shown is rounded (half-up, to the valuation currency's
scale). Percentages have two decimals and sum to exactly 100.00 by the largest-remainder method.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

ALLOCATION_SLICES: Final = 5
OTHERS: Final = "Others"
HUNDREDTHS_IN_WHOLE: Final = 10_000  # 100.00 % in units of 0.01 %

# Exact for any product of a stored holding (at most 34 digits) and a price (at most 64
# characters); divisions for percentages are the only inexact step and they keep 120 digits.
_CONTEXT: Final = decimal.Context(
    prec=120,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)
_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class Holding:
    currency: str
    available: Decimal
    locked: Decimal
    savings: Decimal

    @property
    def total(self) -> Decimal:
        return _CONTEXT.add(self.available, self.locked)

    @property
    def holding(self) -> Decimal:
        """Everything the user owns of it: total_balance plus savings."""
        return _CONTEXT.add(self.total, self.savings)


@dataclass(frozen=True, slots=True)
class AssetValue:
    holding: Holding
    price: Decimal | None  # None: no price known for this currency
    value: Decimal | None  # holding × price, unrounded
    percentage: Decimal | None  # two decimals; None when unpriced

    @property
    def currency(self) -> str:
        return self.holding.currency


@dataclass(frozen=True, slots=True)
class AllocationSlice:
    label: str
    value: Decimal  # unrounded
    percentage: Decimal


@dataclass(frozen=True, slots=True)
class Portfolio:
    total_value: Decimal  # Σ value of the priced assets, unrounded
    assets: tuple[AssetValue, ...]  # by value, largest first; unpriced ones last
    allocation: tuple[AllocationSlice, ...]
    unpriced: tuple[str, ...]


def value_portfolio(
    holdings: Iterable[Holding], prices: Mapping[str, Decimal], valuation_currency: str
) -> Portfolio:
    """Value every holding with `prices` (one snapshot, in `valuation_currency`).

    The valuation currency is worth 1 of itself whether or not a price says so. A holding without
    a price is listed, counted in `unpriced` and left out of the total: never an error.
    """
    priced: list[tuple[Holding, Decimal, Decimal]] = []
    unpriced: list[Holding] = []
    for holding in holdings:
        price = (
            Decimal(1) if holding.currency == valuation_currency else prices.get(holding.currency)
        )
        if price is None:
            unpriced.append(holding)
        else:
            priced.append((holding, price, _CONTEXT.multiply(holding.holding, price)))
    priced.sort(key=lambda item: (-item[2], item[0].currency))
    unpriced.sort(key=lambda holding: holding.currency)

    values = [value for _, _, value in priced]
    total = _sum(values)
    shares = largest_remainder_percentages(values)
    assets = [
        AssetValue(holding, price, value, share)
        for (holding, price, value), share in zip(priced, shares, strict=True)
    ]
    assets.extend(AssetValue(holding, None, None, None) for holding in unpriced)
    return Portfolio(
        total_value=total,
        assets=tuple(assets),
        allocation=allocation_of([(h.currency, value) for h, _, value in priced]),
        unpriced=tuple(h.currency for h in unpriced),
    )


def allocation_of(values: Sequence[tuple[str, Decimal]]) -> tuple[AllocationSlice, ...]:
    """The largest slices by value (at most five) and one "Others" with the rest of those that
    have value; `values` must be sorted largest first."""
    with_value = [(label, value) for label, value in values if value > 0]
    if len(with_value) > ALLOCATION_SLICES:
        rest = _sum(value for _, value in with_value[ALLOCATION_SLICES:])
        with_value = [*with_value[:ALLOCATION_SLICES], (OTHERS, rest)]
    shares = largest_remainder_percentages([value for _, value in with_value])
    return tuple(
        AllocationSlice(label, value, share)
        for (label, value), share in zip(with_value, shares, strict=True)
    )


def largest_remainder_percentages(values: Sequence[Decimal]) -> list[Decimal]:
    """Two-decimal percentages of `values` that sum to exactly 100.00 when any value is positive.

    Each share is first cut down to 0.01 %; the hundredths still missing go one each to the
    shares that lost the most in the cut (ties: the larger value, then the earlier one). With
    nothing of value every share is 0.00.
    """
    total = _sum(values)
    if total <= 0:
        return [Decimal("0.00") for _ in values]
    exact = [_CONTEXT.divide(_CONTEXT.multiply(v, HUNDREDTHS_IN_WHOLE), total) for v in values]
    floors = [int(share.to_integral_value(rounding=decimal.ROUND_FLOOR)) for share in exact]
    missing = HUNDREDTHS_IN_WHOLE - sum(floors)
    by_remainder = sorted(
        range(len(values)),
        key=lambda i: (-_CONTEXT.subtract(exact[i], floors[i]), -values[i], i),
    )
    for i in by_remainder[:missing]:
        floors[i] += 1
    return [Decimal(units).scaleb(-2) for units in floors]


def display_value(value: Decimal, scale: int) -> Decimal:
    """What a person is shown: half-up to the valuation currency's scale (sums never use it)."""
    return value.quantize(
        Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP, context=_CONTEXT
    )


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for value in values:
        total = _CONTEXT.add(total, value)
    return total
