"""The price feed: fetch from the source, apply staging pins, publish; and the pin commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Protocol

import structlog

from trading.prices.domain import Price, PriceBook, stamped_ahead

log = structlog.get_logger(__name__)

PINNED_SOURCE: Final = "pinned"


class PriceSource(Protocol):
    """Where prices come from: the built-in walk or a market data API (in GBP)."""

    name: str

    async def fetch(self) -> Sequence[Price]: ...


class PricePublisher(Protocol):
    async def publish(self, price: Price) -> None: ...


class Pins(Protocol):
    """Staging-only fixed prices, shared by every instance of the service."""

    async def all(self) -> dict[str, Decimal]: ...
    async def pin(self, currency: str, price: Decimal, by: str, at: datetime) -> None: ...
    async def unpin(self, currency: str) -> bool: ...


@dataclass
class PriceFeed:
    """Each tick publishes the source's prices, a pinned currency's pin instead of its price.

    Publishing also updates this process's own book at once; other processes (and this one,
    again) read the topic.
    """

    source: PriceSource
    publisher: PricePublisher
    pins: Pins
    book: PriceBook
    clock: Callable[[], datetime]
    _last_fetched: dict[str, Price] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def tick(self) -> list[Price]:
        try:
            fetched = await self.source.fetch()
        except Exception:
            # The source is away: publish nothing new; prices age until they are stale.
            log.warning("prices.source_failed", source=self.source.name, exc_info=True)
            fetched = []
        async with self._lock:
            now = self.clock()
            # A price stamped ahead of this clock is dropped here, never published nor restored.
            fetched = [p for p in fetched if not stamped_ahead(p, now)]
            for price in fetched:
                self._last_fetched[price.currency] = price
            pins = await self.pins.all()
            published = [p for p in fetched if p.currency not in pins]
            published += [Price(code, value, now, PINNED_SOURCE) for code, value in pins.items()]
            for price in published:
                await self._publish(price)
            return published

    async def pin(self, currency: str, price: Decimal, by: str) -> Price:
        async with self._lock:
            now = self.clock()
            await self.pins.pin(currency, price, by, now)
            pinned = Price(currency, price, now, PINNED_SOURCE)
            await self._publish(pinned)
            return pinned

    async def unpin(self, currency: str) -> Price | None:
        """Drop the pin and publish the source's latest price again (None if it has none, or
        only one the book would hold stale)."""
        async with self._lock:
            await self.pins.unpin(currency)
            latest = self._last_fetched.get(currency)
            now = self.clock()
            if latest is None or now - latest.as_of > self.book.max_age:
                return None  # restamped, a price from a source long gone would look fresh
            # Restamped: it replaces the pin, which is newer than the fetch.
            restored = Price(currency, latest.price, now, latest.source)
            await self._publish(restored)
            return restored

    async def _publish(self, price: Price) -> None:
        self.book.update(price, self.clock())
        await self.publisher.publish(price)
