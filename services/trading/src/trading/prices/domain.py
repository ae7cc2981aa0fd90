"""Prices in the valuation currency (GBP) and the book of the latest one per currency."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from shared.prices import FUTURE_TOLERANCE
from shared.prices import stamped_ahead as stamped_ahead_of
from trading.errors import Unavailable

VALUATION_CURRENCY: Final = "GBP"
# The valuation currency's own price, always 1; never published, never stale.
UNIT_SOURCE: Final = "fixed"


class PriceUnavailable(Unavailable):
    """No fresh price for a currency: it is never quoted."""

    def __init__(self, currency: str, reason: str) -> None:
        super().__init__("price_unavailable", f"no current price for {currency}: {reason}")
        self.currency = currency
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Price:
    """One currency's price in GBP at an instant, and where it came from."""

    currency: str
    price: Decimal
    as_of: datetime
    source: str

    def __post_init__(self) -> None:
        if not self.price.is_finite() or self.price <= 0:
            raise ValueError(f"a price must be positive and finite, got {self.price}")
        if self.as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")


def stamped_ahead(price: Price, now: datetime) -> bool:
    """Whether `price` is stamped too far ahead of `now` (this process's clock) to be taken:
    logged, and refused by the feed and the book (shared.prices)."""
    return stamped_ahead_of(price.currency, price.as_of, price.source, now)


class PriceBook:
    """The latest price per currency. Older messages (a redelivery, a lagging instance) never
    replace a newer price; a price stamped ahead of this process's clock is refused.

    A price is fresh for `max_age` from its as_of and at most `max_age` from when this book took
    it (both by this process's clock); a stale price is never quoted."""

    def __init__(self, max_age: timedelta) -> None:
        self.max_age = max_age
        self._latest: dict[str, Price] = {}
        self._taken_at: dict[str, datetime] = {}

    def update(self, price: Price, now: datetime) -> bool:
        """Take `price`, received at `now`, unless it is older than the one held or stamped
        ahead of `now` (see stamped_ahead)."""
        if stamped_ahead(price, now):
            return False
        current = self._latest.get(price.currency)
        # A held price the clock has stepped back behind gives way to the next one.
        ahead = current is not None and self._ahead(current, now)
        if current is not None and current.as_of > price.as_of and not ahead:
            return False
        if current is None or current.as_of < price.as_of or ahead:
            self._taken_at[price.currency] = now  # a redelivery does not make it fresh again
        self._latest[price.currency] = price
        return True

    def latest(self, currency: str) -> Price | None:
        return self._latest.get(currency)

    def current(self, currency: str, now: datetime) -> Price:
        """The fresh price of `currency` (GBP is always 1), or PriceUnavailable."""
        if currency == VALUATION_CURRENCY:
            return Price(currency, Decimal(1), now, UNIT_SOURCE)
        price = self._latest.get(currency)
        if price is None:
            raise PriceUnavailable(currency, "no price received yet")
        if not self._fresh(price, now):
            raise PriceUnavailable(currency, f"the latest price is from {price.as_of.isoformat()}")
        return price

    def current_prices(self, now: datetime) -> list[Price]:
        """Every fresh price, GBP first, then by currency code."""
        fresh = [p for _, p in sorted(self._latest.items()) if self._fresh(p, now)]
        return [self.current(VALUATION_CURRENCY, now), *fresh]

    def _fresh(self, price: Price, now: datetime) -> bool:
        since = min(price.as_of, self._taken_at[price.currency])
        return now - since <= self.max_age and not self._ahead(price, now)

    def _ahead(self, price: Price, now: datetime) -> bool:
        """Whether a held price is now further ahead of this clock than FUTURE_TOLERANCE: the
        clock stepped back since it was taken. Such a price is not fresh (its age would read
        negative, fresh for as long as the step) and the next price replaces it, though stamped
        before it."""
        taken_at = self._taken_at[price.currency]
        return max(price.as_of, taken_at) - now > FUTURE_TOLERANCE


# Where the built-in feed starts (GBP); it wanders around these and is pulled back towards them.
STARTING_PRICES: Final[dict[str, Decimal]] = {
    "BTC": Decimal("52000"),
    "ETH": Decimal("2800"),
    "USDT": Decimal("0.79"),
    "USDC": Decimal("0.79"),
    "LTC": Decimal("65"),
    "TRX": Decimal("0.095"),
    "SOL": Decimal("110"),
}
# A price is a rate, not an amount: kept to this many significant digits (and at least 2 decimals).
PRICE_SIGNIFICANT_DIGITS: Final = 8


# What a pinned price may be: a quote's rate, price ÷ price with 18 decimals, must stay within
# the 34 digits a stored decimal holds (below 10^15), so pins span at most 15 powers of ten.
PIN_MIN: Final = Decimal("0.000001")
PIN_LIMIT: Final = Decimal("1000000000")


def pin_refusal(value: Decimal) -> tuple[str, str] | None:
    """Why a price cannot be pinned (code, message), or None. Pins are kept as given, never
    rounded, so one of more than PRICE_SIGNIFICANT_DIGITS significant digits is refused: the
    digits are counted, not compared with `round_price`, which keeps 2 decimals from 1,000,000 up
    (9 to 11 digits)."""
    if not value.is_finite() or value <= 0:
        return "amount_not_positive", "a price must be greater than zero"
    if not PIN_MIN <= value < PIN_LIMIT:
        return "price_out_of_range", f"a pinned price is at least {PIN_MIN} and below {PIN_LIMIT}"
    if _significant_digits(value) > PRICE_SIGNIFICANT_DIGITS:
        return (
            "price_too_precise",
            f"a pinned price has at most {PRICE_SIGNIFICANT_DIGITS} significant digits",
        )
    return None


def _significant_digits(value: Decimal) -> int:
    """How many digits of a finite, nonzero `value` are significant (trailing zeros are not,
    "50000.00" has 1), counted exactly, at any length."""
    return len("".join(map(str, value.as_tuple().digits)).strip("0"))


def round_price(value: Decimal) -> Decimal:
    """A price to PRICE_SIGNIFICANT_DIGITS significant digits, never fewer than 2 decimals."""
    if not value.is_finite() or value <= 0:
        raise ValueError(f"not a price: {value}")
    places = max(2, PRICE_SIGNIFICANT_DIGITS - 1 - value.adjusted())
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


class RandomWalk:
    """A deterministic, mean-reverting random walk per currency: the same seed gives the same
    sequence of prices, so demos and tests are repeatable, and prices never drift far away."""

    def __init__(
        self,
        seed: int,
        starting_prices: Mapping[str, Decimal] = STARTING_PRICES,
        *,
        volatility: float = 0.002,
        reversion: float = 0.05,
    ) -> None:
        self._random = random.Random(seed)  # noqa: S311 - a demo feed, not cryptography
        self._start = dict(starting_prices)
        self._log_offsets = dict.fromkeys(starting_prices, 0.0)
        self._volatility = volatility
        self._reversion = reversion

    @property
    def currencies(self) -> list[str]:
        return sorted(self._start)

    def step(self) -> dict[str, Decimal]:
        prices: dict[str, Decimal] = {}
        for code in sorted(self._start):
            offset = self._log_offsets[code]
            offset += self._random.gauss(0.0, self._volatility) - self._reversion * offset
            self._log_offsets[code] = offset
            factor = Decimal(repr(math.exp(offset)))
            prices[code] = round_price(self._start[code] * factor)
        return prices
