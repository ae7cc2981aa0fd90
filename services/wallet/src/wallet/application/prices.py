"""The wallet's prices read model: the latest price of each currency from `market.prices`.

Kept in memory and rebuilt from the topic's recent messages at start:
prices are the trading service's to keep; the wallet only values holdings with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from shared.prices import stamped_ahead

VALUATION_CURRENCY: Final = "GBP"  # every price on market.prices is in GBP (CONTRACT.md, "Prices")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Quote:
    currency: str
    price: Decimal  # in VALUATION_CURRENCY, > 0
    as_of: datetime
    source: str


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    """Prices as they stood at one moment: a portfolio is valued from one snapshot only."""

    valuation_currency: str
    quotes: Mapping[str, Quote]

    def prices(self) -> dict[str, Decimal]:
        return {currency: quote.price for currency, quote in self.quotes.items()}

    def oldest_as_of(self, currencies: set[str]) -> datetime | None:
        """The oldest quote among those currencies: the valuation is at least this fresh."""
        times = [q.as_of for c, q in self.quotes.items() if c in currencies]
        return min(times, default=None)


class PriceBook:
    """Latest quote per currency; an older quote arriving late (a redelivery) changes nothing,
    and neither does one stamped more than FUTURE_TOLERANCE ahead of `clock()` (logged): kept, it
    would value holdings and date them from the future, every correct quote before it ignored."""

    def __init__(
        self,
        valuation_currency: str = VALUATION_CURRENCY,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.valuation_currency = valuation_currency
        self._clock = clock
        self._quotes: dict[str, Quote] = {}
        self._snapshot = PriceSnapshot(valuation_currency, MappingProxyType({}))

    def update(self, quote: Quote) -> bool:
        if stamped_ahead(quote.currency, quote.as_of, quote.source, self._clock()):
            return False
        current = self._quotes.get(quote.currency)
        if current is not None and current.as_of > quote.as_of:
            return False
        self._quotes[quote.currency] = quote
        # A new immutable snapshot per change: readers never see a half-updated book.
        self._snapshot = PriceSnapshot(
            self.valuation_currency, MappingProxyType(dict(self._quotes))
        )
        return True

    def snapshot(self) -> PriceSnapshot:
        return self._snapshot
